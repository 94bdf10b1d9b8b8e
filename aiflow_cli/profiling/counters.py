"""Count what one forward pass of a segment costs: MACs, peak live activation bytes, kernels.

MACs come from ``torch.utils.flop_counter`` (FLOPs / 2: one multiply-accumulate is two FLOPs).
Peak memory is tracked by a dispatch mode that adds the storage of every new op output and
subtracts it when the tensor is freed; the segment's input counts as live from the start.
Kernels are counted by class by ``profiling.kernels.KernelCountMode``.
"""

from __future__ import annotations

import weakref
from typing import Any, NamedTuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from aiflow_cli.profiling.kernels import KernelCountMode
from aiflow_cli.schemas.profile import KernelCounts
from aiflow_cli.tensors import nbytes_of

__all__ = ["PeakMemoryMode", "ForwardCounts", "count_forward"]


class ForwardCounts(NamedTuple):
    out: Any
    macs: int
    peak_bytes: int
    kernels: KernelCounts


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
def count_forward(module: torch.nn.Module, x: Any) -> ForwardCounts:
    """Run ``module(x)`` once, counting MACs, peak live bytes and kernels."""
    flops = FlopCounterMode(display=False)
    memory = PeakMemoryMode(initial_bytes=nbytes_of(x))
    kernels = KernelCountMode(weights=[*module.parameters(), *module.buffers()])
    with flops, memory, kernels:
        out = module(x)
    return ForwardCounts(out, flops.get_total_flops() // 2, memory.peak, kernels.counts())
