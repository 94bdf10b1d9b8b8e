"""Project a measured profile onto other hardware: a roofline for the work, kernels for the overhead.

For each segment, on the target, under one of its runtimes, at batch ``B``::

    compute = max(B x MACs / peak_MAC_per_s, bytes_moved(B) / memory_bandwidth) / efficiency
    device  = compute + kernels x per_kernel_us        (launch latency, floor of a tiny kernel)
    host    = kernels x host_per_kernel_us             (framework + driver dispatch, asynchronous)
    segment = max(device, host)
    call    = segments + per_call_us                   (once per call: graph launch, session run, sync)

    bytes_moved(B) = weight bytes + B x activation bytes the launched kernels read and write

``kernels`` is the segment's traced kernel count less what the runtime fuses (see
``profiling/kernels.py``); the per-kernel figures and fusions come from the hardware profile,
per runtime, with their source. At batch 1 on a GPU the kernel terms dominate (tens of
microseconds per segment against a roofline of under one); at large batch the roofline does,
and nothing in the model is fitted to either end.

The roofline's ``efficiency`` (the fraction of peak real kernels reach) is the profile's own
figure when it gives one, else calibrated on this machine: ``e = sum roofline(host) / sum
(measured - kernels x this host's per-kernel cost)``, with the host's peak, bandwidth and
per-kernel cost measured here by a matmul, a large copy and a chain of tiny ops. Every projected
number is labelled ``projected``.
"""

from __future__ import annotations

import functools
import statistics
import time
from dataclasses import dataclass, field

import torch

from aiflow_cli.errors import ConfigError
from aiflow_cli.ort import ort_session
from aiflow_cli.schemas.hardware import ComputeProfile, RuntimeOverhead
from aiflow_cli.schemas.profile import ProfileReport, ProjectedSegment, Projection

__all__ = ["HostRoofline", "HOST_FUSES", "measure_host_roofline", "segment_bytes_moved", "roofline_ms", "project",
           "host_efficiency"]

# What the runtime measured on this machine fuses (onnxruntime's CPU provider folds norms at export
# and fuses activations into convolutions; PyTorch eager launches every op).
HOST_FUSES: dict[str, tuple[str, ...]] = {"torch": (), "cuda-graph": (), "onnxruntime": ("normalization", "pointwise")}


@dataclass(frozen=True)
class HostRoofline:
    peak_macs_per_s: float
    memory_bandwidth_bytes_per_s: float
    per_kernel_s: dict[str, float] = field(default_factory=dict)  # by measured runtime (torch, onnxruntime)


def _median_time(fn, repeats: int = 7) -> float:  # noqa: ANN001
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _torch_per_op_s(ops: int = 200) -> float:
    """Cost of one tiny eager op here (dispatch, not arithmetic): a chain of in-place adds on one float."""
    x = torch.zeros(1)

    def chain() -> None:
        for _ in range(ops):
            x.add_(1.0)

    return _median_time(chain) / ops


def _onnxruntime_per_node_s(nodes: int = 64) -> float:
    """Cost of one tiny node in an onnxruntime session here: (chain of n Adds - chain of 1) / (n - 1)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    def session(n: int):  # noqa: ANN202
        one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
        names = ["x"] + [f"h{i}" for i in range(n - 1)] + ["y"]
        graph = helper.make_graph([helper.make_node("Add", [names[i], "one"], [names[i + 1]]) for i in range(n)],
                                  "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [one])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = min(model.ir_version, onnx.IR_VERSION)
        return ort_session(model.SerializeToString(), threads=1)

    feed = {"x": np.zeros(1, np.float32)}
    long, short = session(nodes), session(1)
    t_long = _median_time(lambda: long.run(None, feed), repeats=15)
    t_short = _median_time(lambda: short.run(None, feed), repeats=15)
    return max(0.0, (t_long - t_short) / (nodes - 1))


@functools.lru_cache(maxsize=4)
@torch.no_grad()
def measure_host_roofline(n: int = 1024, copy_mb: int = 256, runtime: str = "torch") -> HostRoofline:
    """Peak fp32 MAC/s from an n x n matmul; bandwidth from copying ``copy_mb`` MB; the per-kernel
    cost of ``runtime`` from a chain of tiny ops. Measured once per process (it takes about a second)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    t_mm = _median_time(lambda: torch.mm(a, b))
    src = torch.empty(copy_mb * 2**20 // 4)
    dst = torch.empty_like(src)
    t_copy = _median_time(lambda: dst.copy_(src), repeats=5)
    per_kernel = {"torch": _torch_per_op_s()}
    if runtime == "onnxruntime":
        per_kernel["onnxruntime"] = _onnxruntime_per_node_s()
    return HostRoofline(peak_macs_per_s=n**3 / t_mm, memory_bandwidth_bytes_per_s=2 * src.numel() * 4 / t_copy,
                        per_kernel_s=per_kernel)


def segment_bytes_moved(report: ProfileReport, batch_scale: float = 1.0, fuses: tuple[str, ...] | list[str] = ()
                        ) -> list[float]:
    """Weights once, plus the activation traffic of the kernels a runtime launches (what fusing
    saves is gone), scaled with the batch. Where the traffic is unknown: the segment's input and output."""
    moved = []
    previous = report.input_bytes.raw
    for seg in report.segments:
        traffic = seg.kernels.traffic(fuses)
        moved.append(seg.weight_bytes + batch_scale * (traffic if traffic is not None else previous + seg.out_bytes))
        previous = seg.out_bytes
    return moved


def roofline_ms(macs: float, nbytes: float, peak_macs_per_s: float, bandwidth: float) -> tuple[float, str]:
    compute, memory = macs / peak_macs_per_s, nbytes / bandwidth
    return (max(compute, memory) * 1e3, "compute" if compute >= memory else "memory")


def host_efficiency(report: ProfileReport, host: HostRoofline) -> float:
    """Fraction of this host's roofline the measured segments reached, once this host's own
    per-kernel cost (measured, for the runtime the profile used) is taken out of the timings."""
    runtime = report.settings.runtime
    per_kernel_ms = host.per_kernel_s.get(runtime, 0.0) * 1e3
    fuses = HOST_FUSES.get(runtime, ())
    roof_total = work_total = 0.0
    for seg, nbytes, measured in zip(report.segments, segment_bytes_moved(report, 1.0, fuses), report.compute_latencies_ms()):
        roof = roofline_ms(seg.macs, nbytes, host.peak_macs_per_s, host.memory_bandwidth_bytes_per_s)[0]
        roof_total += roof
        work_total += max(roof, measured - seg.kernels.launched(fuses) * per_kernel_ms)
    return min(1.0, roof_total / work_total) if work_total > 0 else 1.0


def _fits(report: ProfileReport, target: ComputeProfile, scale: float) -> bool | None:
    if target.memory_bytes is None:
        return None
    peak = max(s.peak_memory_bytes for s in report.segments)
    return report.total.weight_bytes + scale * peak <= target.memory_bytes


def project(report: ProfileReport, target: ComputeProfile, host: HostRoofline, runtime: str | None = None,
            batch: int | None = None) -> Projection:
    """Each segment of ``report`` on ``target`` under ``runtime`` (default: the profile's), at ``batch``
    (default: the batch measured)."""
    name, overhead = target.runtime(runtime)
    overhead = overhead or RuntimeOverhead(per_kernel_us=0, source="no runtimes in the hardware profile: roofline only",
                                           assumed=True)
    batch = batch or report.settings.batch
    scale = batch / report.settings.batch
    if target.efficiency is not None:
        efficiency, source = target.efficiency, "profile"
    elif report.settings.on != "cpu":
        raise ConfigError(f"{target.name}: no efficiency given, and a profile timed on a GPU cannot calibrate one "
                          "against this CPU's roofline", "project from a CPU profile, or add efficiency: to the YAML")
    else:
        efficiency, source = host_efficiency(report, host), "calibrated"
    segments = []
    for seg, nbytes in zip(report.segments, segment_bytes_moved(report, scale, overhead.fuses)):
        roof, bound = roofline_ms(seg.macs * scale, nbytes, target.peak_macs_per_s, target.memory_bandwidth_bytes_per_s)
        compute = roof / efficiency
        kernels = seg.kernels.launched(overhead.fuses)
        launch = kernels * overhead.per_kernel_us / 1e3
        host_ms = kernels * overhead.host_per_kernel_us / 1e3
        device = compute + launch
        if host_ms > device:
            bound = "host"
        elif launch > compute:
            bound = "launch"
        segments.append(ProjectedSegment(name=seg.name, latency_ms=round(max(device, host_ms), 6),
                                         compute_ms=round(compute, 6), kernels=kernels, launch_ms=round(launch, 6),
                                         host_ms=round(host_ms, 6), bound=bound))
    call_ms = overhead.per_call_us / 1e3
    return Projection(target=target.name, target_kind=target.kind, runtime=name, runtime_source=overhead.source,
                      runtime_assumed=overhead.assumed, batch=batch, per_kernel_us=overhead.per_kernel_us,
                      host_per_kernel_us=overhead.host_per_kernel_us, call_overhead_ms=round(call_ms, 6),
                      efficiency=round(efficiency, 5), efficiency_source=source, segments=segments,
                      total_latency_ms=round(sum(s.latency_ms for s in segments) + call_ms, 6),
                      fits_memory=_fits(report, target, scale))
