"""Count what one forward pass of a segment costs: MACs and peak live activation bytes.

MACs come from ``torch.utils.flop_counter`` (FLOPs / 2: one multiply-accumulate is two FLOPs).
Peak memory is tracked by a dispatch mode that adds the storage of every new op output and
subtracts it when the tensor is freed; the segment's input counts as live from the start.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from aiflow_cli.tensors import nbytes_of

__all__ = ["PeakMemoryMode", "count_forward"]


class PeakMemoryMode(TorchDispatchMode):
    def __init__(self, initial_bytes: int = 0) -> None:
        super().__init__()
        self.live = initial_bytes
        self.peak = initial_bytes
        self._storages: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self._storages.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch protocol
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            key = t.untyped_storage().data_ptr()
            if key in self._storages or key == 0:
                continue  # a view or in-place result: no new memory
            nbytes = t.untyped_storage().nbytes()
            self._storages.add(key)
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            weakref.finalize(t, self._free, key, nbytes)
        return out


@torch.no_grad()
def count_forward(module: torch.nn.Module, x: Any) -> tuple[Any, int, int]:
    """Run ``module(x)`` once; return (output, MACs, peak live bytes)."""
    flops = FlopCounterMode(display=False)
    memory = PeakMemoryMode(initial_bytes=nbytes_of(x))
    with flops, memory:
        out = module(x)
    return out, flops.get_total_flops() // 2, memory.peak
