"""Count the kernels a segment launches, by class, from its traced graph or its ONNX graph.

On an accelerator at small batch, time is set by how many kernels run, not by FLOPs: each one
pays a launch and a minimum duration. What a runtime launches depends on what it fuses, so the
count is kept by class and each runtime in a hardware profile says which classes it fuses into
the kernel before them:

- ``ops``: every op that launches work (views, reshapes and allocations launch nothing);
- ``normalization``: inference-mode batch/layer/group norms (an affine map per channel: folded
  into the convolution at ONNX export, fused by TensorRT);
- ``pointwise``: element-wise ops (activations, residual adds, scaling), fused into their
  producer by TensorRT and onnxruntime's CPU provider, launched one by one by PyTorch eager.

A torch segment is traced with a dispatch mode (the aten ops its forward really calls), which also
adds up the activation bytes each op reads and writes (parameters excluded: they are read once per
call whatever the batch): the memory traffic of an unfused runtime, and what fusing a class saves.
An ONNX segment counts its nodes; its traffic stays unknown.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from aiflow_cli.schemas.profile import KernelCounts

__all__ = ["KernelCountMode", "onnx_kernel_counts", "FREE_ONNX_OPS"]

_NORMALIZATION_ATEN = ("native_batch_norm", "_native_batch_norm_legit", "cudnn_batch_norm", "batch_norm",
                       "native_layer_norm", "native_group_norm", "rms_norm", "_fused_rms_norm")
_FACTORY_ATEN = ("empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "lift_fresh",
                 "_local_scalar_dense", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset")

# ONNX ops that only rename, reshape or describe tensors: no kernel in any runtime we model.
FREE_ONNX_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Shape", "Constant", "Identity",
                           "ConstantOfShape", "Size"})
_NORMALIZATION_ONNX = frozenset({"BatchNormalization", "LayerNormalization", "GroupNormalization",
                                 "InstanceNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization",
                                 "RMSNormalization"})
_POINTWISE_ONNX = frozenset({"Relu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu", "Elu", "Gelu",
                             "FastGelu", "Erf", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Neg", "Exp", "Log",
                             "Cast", "Where", "Max", "Min", "Abs", "Reciprocal", "Softplus", "Mish"})


def _aten_name(func: Any) -> str:
    return func.overloadpacket.__name__ if hasattr(func, "overloadpacket") else str(func)


class KernelCountMode(TorchDispatchMode):
    """Counts the aten ops a forward pass calls that launch work, by class, with their activation traffic.

    ``weights``: the module's parameters and buffers, whose bytes are not activation traffic.
    """

    def __init__(self, weights: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.weights = {t.untyped_storage().data_ptr() for t in weights}
        self.ops = self.normalization = self.pointwise = 0
        self.traffic = {"all": 0, "normalization": 0, "pointwise": 0}

    def _activation_bytes(self, values: Any) -> int:
        return sum(t.numel() * t.element_size() for t in tree_flatten(values)[0]
                   if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in self.weights)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch protocol
        out = func(*args, **(kwargs or {}))
        name = _aten_name(func).rstrip("_")
        if not (getattr(func, "is_view", False) or name in _FACTORY_ATEN):
            moved = self._activation_bytes((args, kwargs)) + self._activation_bytes(out)
            self.ops += 1
            self.traffic["all"] += moved
            if name in _NORMALIZATION_ATEN:
                self.normalization += 1
                self.traffic["normalization"] += moved
            elif torch.Tag.pointwise in getattr(func, "tags", ()):
                self.pointwise += 1
                self.traffic["pointwise"] += moved
        return out

    def counts(self) -> KernelCounts:
        return KernelCounts(ops=self.ops, normalization=self.normalization, pointwise=self.pointwise,
                            traffic_bytes=self.traffic["all"], normalization_traffic_bytes=self.traffic["normalization"],
                            pointwise_traffic_bytes=self.traffic["pointwise"])


def onnx_kernel_counts(proto: Any) -> KernelCounts:
    """Nodes of an ONNX graph (its top level), by class; shape-only nodes launch nothing."""
    ops = normalization = pointwise = 0
    for node in proto.graph.node:
        if node.op_type in FREE_ONNX_OPS:
            continue
        ops += 1
        normalization += node.op_type in _NORMALIZATION_ONNX
        pointwise += node.op_type in _POINTWISE_ONNX
    return KernelCounts(ops=ops, normalization=normalization, pointwise=pointwise)
