"""Export one torch module (a segment, or a range of segments) to an in-memory ONNX model.

The TorchScript-based exporter is used by default: it is ~20x faster than the dynamo exporter
on these models and handles CNNs and encoders with dynamic batch/sequence axes. Decoder slices
with a KV cache go through the dynamo exporter (``dynamo=True``), which the legacy one fails on.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from aiflow_cli.tensors import tensors_of

__all__ = ["export_onnx_file", "OPSET", "export_onnx", "value_names"]

OPSET = 17


def value_names(prefix: str, value: Any) -> list[str]:
    n = len(tensors_of(value))
    return [prefix] if n == 1 else [f"{prefix}_{i}" for i in range(n)]


class _Flat(nn.Module):
    """Let a one-value module (tensor or tuple) be called with positional tensors by the exporter."""

    def __init__(self, module: nn.Module, n_inputs: int) -> None:
        super().__init__()
        self.module, self.n_inputs = module, n_inputs

    def forward(self, *xs: torch.Tensor) -> Any:
        return self.module(xs[0] if self.n_inputs == 1 else tuple(xs))


def export_onnx(module: nn.Module, example: Any, input_names: list[str], output_names: list[str],
                dynamic_axes: dict[str, dict[int, str]] | None = None, opset: int = OPSET) -> onnx.ModelProto:
    inputs = tuple(tensors_of(example))
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Flat(module, len(inputs)).eval(), inputs, buf, dynamo=False,
                          input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes or {}, opset_version=opset, do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())


def export_onnx_file(module: nn.Module, example: Any, path: Path, input_names: list[str], output_names: list[str],
                     dynamic_axes: dict[str, dict[int, str]] | None = None, opset: int = OPSET) -> None:
    """Like :func:`export_onnx`, written to ``path``: a graph over protobuf's 2 GB limit keeps its
    weights in external data files beside it (a 1.5B-parameter LM in fp32 is 7 GB)."""
    inputs = tuple(tensors_of(example))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Flat(module, len(inputs)).eval(), inputs, str(path), dynamo=False,
                          input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes or {}, opset_version=opset, do_constant_folding=True)
