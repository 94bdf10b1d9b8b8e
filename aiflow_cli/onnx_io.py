"""Export one torch module (a segment, a pair half, a whole model) to ONNX.

The PyTorch exporter (``torch.onnx.export(..., dynamo=True)``: torch.export, then onnxscript) is
the default, as PyTorch itself now recommends. Where it fails on a model, the TorchScript exporter
takes that one graph, with a visible :class:`ExporterFallbackWarning` naming why; the graph records
which exporter wrote it in its ``metadata_props`` (``aiflow.exporter``), and export manifests copy
that per file. The TorchScript exporter is 10-20x faster on these models (figures in
docs/benchmarks.md, "ONNX exporters"); ``exporter="torchscript"`` asks for it outright.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any, Iterator, Literal, cast

import onnx
import torch
from torch import nn

from aiflow_cli.errors import InputError
from aiflow_cli.tensors import tensors_of

__all__ = ["export_onnx_file", "OPSET", "export_onnx", "value_names", "Exporter", "EXPORTERS",
           "ExporterFallbackWarning", "exporter_of", "EXPORTER_KEY", "check_exporter"]

OPSET = 18  # the lowest the dynamo exporter writes; the TorchScript fallback writes the same
Exporter = Literal["dynamo", "torchscript"]
EXPORTERS: tuple[str, ...] = ("dynamo", "torchscript")
EXPORTER_KEY = "aiflow.exporter"


class ExporterFallbackWarning(UserWarning):
    """The dynamo exporter failed on a graph and the TorchScript exporter wrote it instead."""


def value_names(prefix: str, value: Any) -> list[str]:
    n = len(tensors_of(value))
    return [prefix] if n == 1 else [f"{prefix}_{i}" for i in range(n)]


def check_exporter(name: str) -> Exporter:
    """``--exporter`` as given on a command line, refused with the choices when unknown."""
    if name not in EXPORTERS:
        raise InputError(f"--exporter must be one of {', '.join(EXPORTERS)}, got '{name}'",
                         "dynamo is the default; torchscript is faster to export")
    return cast(Exporter, name)


def exporter_of(proto: onnx.ModelProto) -> str | None:
    """Which exporter wrote a graph (``dynamo``, or ``torchscript`` with the reason it was used)."""
    return next((p.value for p in proto.metadata_props if p.key == EXPORTER_KEY), None)


class _Flat(nn.Module):
    """Let a one-value module (tensor or tuple) be called with positional tensors by the exporter."""

    def __init__(self, module: nn.Module, n_inputs: int) -> None:
        super().__init__()
        self.module, self.n_inputs = module, n_inputs

    def forward(self, *xs: torch.Tensor) -> Any:
        return self.module(xs[0] if self.n_inputs == 1 else tuple(xs))


def _dynamic_shapes(input_names: list[str], dynamic_axes: dict[str, dict[int, str]]) -> tuple:
    """``dynamic_axes`` (names) as torch.export's ``dynamic_shapes`` for ``_Flat``'s ``*xs``."""
    return (tuple({axis: torch.export.Dim.DYNAMIC for axis in dynamic_axes[name]} if dynamic_axes.get(name) else None
                  for name in input_names),)


def _widen(inputs: tuple, input_names: list[str], dynamic_axes: dict[str, dict[int, str]]) -> tuple:
    """The example with every dynamic axis at least 2 long: torch.export bakes a dimension of size 0
    or 1 into the graph as a constant (its 0/1 specialisation), and a graph traced at batch 1 then
    fails at batch 2 inside onnxruntime. Size-1 axes are repeated, empty ones (an empty KV cache)
    filled with zeros."""
    widened = []
    for name, t in zip(input_names, inputs):
        for axis in dynamic_axes.get(name, {}):
            if t.shape[axis] == 1:
                t = t.repeat_interleave(2, dim=axis)
            elif t.shape[axis] == 0:
                t = t.new_zeros((*t.shape[:axis], 2, *t.shape[axis + 1:]))
        widened.append(t)
    return tuple(widened)


def _name_axes(proto: onnx.ModelProto, dynamic_axes: dict[str, dict[int, str]]) -> None:
    """Give the graph's dynamic dimensions the names in ``dynamic_axes`` (dynamo calls them s0, s1,
    s0 + s1, ...), so that declarations written from the same axes match the graph."""
    renamed: dict[str, str] = {}
    for value in [*proto.graph.input, *proto.graph.output]:
        for axis, label in dynamic_axes.get(value.name, {}).items():
            dim = value.type.tensor_type.shape.dim[axis]
            if dim.dim_param:
                renamed.setdefault(dim.dim_param, label)
            dim.dim_param = label
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in renamed:
                dim.dim_param = renamed[dim.dim_param]


def _unpinned_outputs(proto: onnx.ModelProto, dynamic_axes: dict[str, dict[int, str]]) -> bool:
    """Whether an output has a symbolic dimension that is not one of its dynamic axes."""
    return any(dim.dim_param and axis not in dynamic_axes.get(value.name, {})
               for value in proto.graph.output for axis, dim in enumerate(value.type.tensor_type.shape.dim))


def _pin_static_dims(proto: onnx.ModelProto, module: nn.Module, inputs: tuple,
                     dynamic_axes: dict[str, dict[int, str]]) -> None:
    """Write the example's sizes into output dimensions that are static but came out symbolic.

    The TorchScript exporter names a dimension it computed from shapes at run time (a pad to a
    multiple of the block size, then ``pixel_unshuffle``: ``Castactivation_dim_2``) even where it
    is fixed for every input; the manifest declares the fixed size, and ``split verify`` compares
    the two. Only axes outside ``dynamic_axes`` are pinned; one forward pass gives the sizes."""
    if not _unpinned_outputs(proto, dynamic_axes):
        return
    outputs = tensors_of(_Flat(module, len(inputs)).eval()(*inputs))
    for value, tensor in zip(proto.graph.output, outputs):
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.dim_param and axis not in dynamic_axes.get(value.name, {}) and axis < tensor.dim():
                dim.dim_value = int(tensor.shape[axis])  # clears dim_param (a oneof)


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """The dynamo exporter logs every step ('Obtain model graph...', 'torchvision is not installed')
    at INFO/WARNING, and its optimiser one INFO line per folded node once anything (onnxruntime's
    quantiser does) has set the root logger to INFO; that is progress, not problems. Real warnings
    (the ``warnings`` module) still reach the user."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.onnx._internal.exporter._registration",
                                              "torch.export", "torch._export", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _dynamo(module: nn.Module, inputs: tuple, path: Path | None, input_names: list[str], output_names: list[str],
            dynamic_axes: dict[str, dict[int, str]], opset: int) -> onnx.ModelProto | None:
    """The graph in memory, or (``path``) written there with its weights in an external data file."""
    with _quiet_progress(), warnings.catch_warnings():
        # torch.export's own deprecation chatter about pytree internals, not about the model
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.utils\._pytree|copyreg")
        program = torch.onnx.export(_Flat(module, len(inputs)).eval(), _widen(inputs, input_names, dynamic_axes),
                                    None, dynamo=True,
                                    input_names=input_names, output_names=output_names,
                                    dynamic_shapes=_dynamic_shapes(input_names, dynamic_axes) if dynamic_axes else None,
                                    opset_version=opset, optimize=True, verbose=False, report=False)
        if path is not None:
            program.save(str(path), external_data=True)
            return None
    return program.model_proto


def _torchscript(module: nn.Module, inputs: tuple, path: Path | None, input_names: list[str],
                 output_names: list[str], dynamic_axes: dict[str, dict[int, str]], opset: int) -> onnx.ModelProto | None:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # the exporter's notice that it is deprecated: the fallback warning already says which graph
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(_Flat(module, len(inputs)).eval(), inputs, buf if path is None else str(path), dynamo=False,
                          input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue()) if path is None else None


def _export(module: nn.Module, example: Any, path: Path | None, input_names: list[str], output_names: list[str],
            dynamic_axes: dict[str, dict[int, str]] | None, opset: int, exporter: Exporter) -> onnx.ModelProto | None:
    """The graph in memory (``path`` None), or written to ``path`` (then None)."""
    inputs = tuple(tensors_of(example))
    axes = dynamic_axes or {}
    args = (module, inputs, path, input_names, output_names, axes, opset)
    with torch.no_grad():
        if exporter == "dynamo":
            try:
                proto, note = _dynamo(*args), "dynamo"
            except Exception as err:  # noqa: BLE001 - torch.export raises many types; all mean "fall back"
                reason = _first_line(err)
                warnings.warn(f"the dynamo exporter failed on {type(module).__name__} ({reason}); "
                              "the TorchScript exporter wrote this graph", ExporterFallbackWarning, stacklevel=3)
                proto, note = _torchscript(*args), f"torchscript (dynamo failed: {reason})"
        else:
            proto, note = _torchscript(*args), "torchscript"
        # a graph written to path is edited in its file; its external weights stay untouched
        graph = proto if proto is not None else onnx.load(str(path), load_external_data=False)
        _finish(graph, axes, note, module, inputs)
    if proto is None:
        onnx.save(graph, str(path))
        return None
    return graph


def _finish(proto: onnx.ModelProto, dynamic_axes: dict[str, dict[int, str]], exporter: str, module: nn.Module,
            inputs: tuple) -> None:
    """Axis names, fixed sizes (TorchScript only: torch.export traces them as constants) and the
    exporter's name in the graph's metadata."""
    _name_axes(proto, dynamic_axes)
    if exporter.startswith("torchscript"):
        _pin_static_dims(proto, module, inputs, dynamic_axes)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = EXPORTER_KEY, exporter


def export_onnx(module: nn.Module, example: Any, input_names: list[str], output_names: list[str],
                dynamic_axes: dict[str, dict[int, str]] | None = None, opset: int = OPSET,
                exporter: Exporter = "dynamo") -> onnx.ModelProto:
    """``module`` called on ``example`` (a tensor or a tuple of tensors) as an in-memory ONNX graph."""
    return cast(onnx.ModelProto, _export(module, example, None, input_names, output_names, dynamic_axes, opset,
                                         exporter))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = next((ln for ln in text if ln.strip() and "Exception summary" not in ln), type(err).__name__)
    return line.strip()[:200]


def export_onnx_file(module: nn.Module, example: Any, path: Path, input_names: list[str], output_names: list[str],
                     dynamic_axes: dict[str, dict[int, str]] | None = None, opset: int = OPSET,
                     exporter: Exporter = "dynamo") -> None:
    """Like :func:`export_onnx`, written to ``path`` with the weights in external data beside it
    (a 1.5B-parameter LM in fp32 is 7 GB, over protobuf's 2 GB limit)."""
    _export(module, example, path, input_names, output_names, dynamic_axes, opset, exporter)
