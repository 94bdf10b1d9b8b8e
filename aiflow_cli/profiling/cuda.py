"""Run a segmented model on a CUDA GPU for timing: eager, or each segment replayed as a CUDA graph.

A GPU runs asynchronously, so a timer around a call measures only the launch; every wrapped call
ends with ``torch.cuda.synchronize()`` so the profiler's timer sees the work. cuDNN picks its
fastest algorithms (``cudnn.benchmark``) and fp32 matmuls and convolutions may use TF32, as a
served model would.

A captured segment replays on static buffers: the input is copied into the captured input
(one device-to-device copy, as a serving engine does), then the graph replays.
"""

from __future__ import annotations

from typing import Any

import torch

from aiflow_cli.errors import InputError
from aiflow_cli.models.segmented import Segment, SegmentedModel

__all__ = ["require_cuda", "cuda_name", "to_cuda", "on_cuda"]


def require_cuda() -> None:
    """Exit 2 with a clear line where there is no CUDA device to profile on."""
    if not torch.cuda.is_available():
        build = torch.version.cuda or "none (a CPU-only build)"
        raise InputError(f"--on cuda: no CUDA device is available here (torch {torch.__version__}, CUDA build {build})",
                         "run on a machine with an NVIDIA GPU and a CUDA build of torch, or use --on cpu")


def cuda_name() -> str | None:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def to_cuda(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.cuda()
    if isinstance(value, (tuple, list)):
        return type(value)(to_cuda(v) for v in value)
    if isinstance(value, dict):
        return {k: to_cuda(v) for k, v in value.items()}
    return value


class _Synced(torch.nn.Module):
    """Eager on the GPU, returning only once the GPU has finished."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Any) -> Any:
        out = self.module(x)
        torch.cuda.synchronize()
        return out


class _GraphReplay(torch.nn.Module):
    """One captured CUDA graph of ``module`` on a static copy of ``example``."""

    def __init__(self, module: torch.nn.Module, example: torch.Tensor, warmup: int = 3) -> None:
        super().__init__()
        if not isinstance(example, torch.Tensor):
            raise InputError("--runtime cuda-graph captures segments with one tensor input",
                             "use --runtime torch for this model")
        self.static_in = example.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):  # cuDNN autotuning and lazy allocations happen outside the capture
                module(self.static_in)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out = module(self.static_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.data_ptr() != self.static_in.data_ptr():
            self.static_in.copy_(x)
        self.graph.replay()
        torch.cuda.synchronize()
        return self.static_out


@torch.no_grad()
def on_cuda(model: SegmentedModel, x: Any, graph: bool) -> tuple[list[Segment], torch.nn.Module, Any]:
    """The model's segments and whole model moved to the GPU, wrapped to synchronise (and, with
    ``graph``, captured), and the input moved there."""
    require_cuda()
    if model.task == "causal-lm" or "onnx_path" in model.extras:
        raise InputError("--on cuda profiles torch image and encoder models",
                         "profile causal LMs and .onnx sources with --on cpu")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model.whole.cuda().eval()
    for seg in model.segments:
        seg.module.cuda().eval()
    x = to_cuda(x)
    if not graph:
        return [Segment(s.name, _Synced(s.module)) for s in model.segments], _Synced(model.whole), x
    segments, h = [], x
    for seg in model.segments:
        replay = _GraphReplay(seg.module, h)
        segments.append(Segment(seg.name, replay))
        h = replay.static_out
    return segments, _GraphReplay(model.whole, x), x
