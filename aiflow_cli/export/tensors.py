"""Declare boundary tensors once; ONNX names, dynamic axes, manifest and Triton all derive from it."""

from __future__ import annotations

from typing import Any

import torch

from aiflow_cli.models.segmented import SegmentedModel
from aiflow_cli.schemas.manifest import TensorDecl
from aiflow_cli.tensors import tensors_of

__all__ = ["declare", "dynamic_axes", "boundary_names", "torch_dtype_name"]

_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.uint8: "uint8", torch.int8: "int8",
           torch.int64: "int64", torch.int32: "int32", torch.bool: "bool"}


def torch_dtype_name(dtype: torch.dtype) -> str:
    return _DTYPES[dtype]


def boundary_names(model: SegmentedModel, which: str, value: Any) -> list[str]:
    """Names for the tensors of ``value`` at an input / crossing / output boundary."""
    given = {"input": model.input_names, "crossing": model.crossing_names, "output": model.output_names}[which]
    n = len(tensors_of(value))
    if given and len(given) == n:
        return list(given)
    return [which] if n == 1 else [f"{which}_{i}" for i in range(n)]


def declare(model: SegmentedModel, names: list[str], value: Any, prefix: str = "") -> list[TensorDecl]:
    decls = []
    for name, t in zip(names, tensors_of(value)):
        shape: list[int | str] = list(t.shape)
        if shape:
            shape[0] = "batch"
        if model.sequence_axis and len(shape) >= 2:
            shape[1] = "sequence"
        decls.append(TensorDecl(name=prefix + name, shape=shape, dtype=torch_dtype_name(t.dtype)))
    return decls


def dynamic_axes(decls: list[TensorDecl]) -> dict[str, dict[int, str]]:
    return {d.name: {i: s for i, s in enumerate(d.shape) if isinstance(s, str)} for d in decls}
