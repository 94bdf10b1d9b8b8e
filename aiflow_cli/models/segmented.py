"""The common shape every model source is turned into: a chain of segments between cut points.

::

    input --seg[0]--> cut[0] --seg[1]--> cut[1] ... cut[n-1] --seg[n]--> output

Each segment is a module taking exactly one value (a tensor, or a fixed tuple of tensors such
as ``(hidden_states, attention_mask)``) and returning the value that crosses the next cut.
Running the chain must give the same output as ``whole`` (the unsplit model), which is what
profiling compares against and what export verifies.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from aiflow_cli.errors import InputError

__all__ = ["Segment", "SegmentedModel", "fingerprint_module"]


@dataclass
class Segment:
    name: str
    module: nn.Module


@dataclass
class SegmentedModel:
    """A model cut into segments. ``cuts[i]`` is the boundary after ``segments[i]``."""

    spec: str
    name: str
    task: str  # image-classification | sentence-embedding | causal-lm | generic
    segments: list[Segment]
    whole: nn.Module
    make_input: Callable[[int, int | None], Any]
    default_seq_len: int | None = None
    tokenizer: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
    # Names of the tensors at the boundaries (one per tensor in the value); None = generic names.
    input_names: list[str] | None = None
    crossing_names: list[str] | None = None
    output_names: list[str] | None = None
    sequence_axis: bool = False  # text models: axis 1 of every >=2-D tensor is the (dynamic) sequence

    def __post_init__(self) -> None:
        if len(self.segments) < 2:
            raise ValueError(f"{self.name}: a segmented model needs at least one cut")

    @property
    def cuts(self) -> list[str]:
        return [s.name for s in self.segments[:-1]]

    def cut_index(self, cut: str) -> int:
        """Index of ``cut`` in :attr:`cuts`; an unknown cut lists the valid ones."""
        if cut not in self.cuts:
            raise InputError(f"unknown cut '{cut}' for {self.name}", "valid cuts: " + ", ".join(self.cuts))
        return self.cuts.index(cut)

    @torch.no_grad()
    def run_chain(self, x: Any, start: int = 0, stop: int | None = None) -> Any:
        for seg in self.segments[start:stop]:
            x = seg.module(x)
        return x

    def describe_input(self) -> str:
        """What :attr:`make_input` feeds (real photos, seeded token ids, random numbers), for reports."""
        describe = self.extras.get("describe_input")
        if describe is not None:
            return describe()
        if self.task in ("causal-lm", "sentence-embedding"):
            return "seeded token ids (latency depends on the length, not on which tokens)"
        return "the example input of the model source"

    def fingerprint(self) -> str:
        if "onnx_path" in self.extras:
            with open(self.extras["onnx_path"], "rb") as fh:
                return hashlib.file_digest(fh, "sha256").hexdigest()
        return fingerprint_module(self.whole)


def fingerprint_module(module: nn.Module) -> str:
    """sha256 over parameter/buffer names, shapes, dtypes and values: which weights, exactly."""
    h = hashlib.sha256()
    for name, t in list(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()
                 if t.numel() else b"")
    return h.hexdigest()
