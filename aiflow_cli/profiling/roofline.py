"""Project a measured profile onto other hardware with a calibrated roofline.

For each segment::

    t_roof(hw) = max(MACs / peak_MAC_per_s(hw), bytes_moved / memory_bandwidth(hw))
    bytes_moved = weight bytes + bytes in + bytes out

The roofline is optimistic; real kernels reach a fraction of it. That fraction (efficiency) is
calibrated on this machine: ``e = sum t_roof(this host) / sum measured``, using this host's own
roofline, measured here by a matmul and a large copy. A target profile may give its own
efficiency instead. Every projected number is labelled ``projected``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from aiflow_cli.schemas.hardware import ComputeProfile
from aiflow_cli.schemas.profile import ProfileReport, ProjectedSegment, Projection

__all__ = ["HostRoofline", "measure_host_roofline", "segment_bytes_moved", "roofline_ms", "project"]


@dataclass(frozen=True)
class HostRoofline:
    peak_macs_per_s: float
    memory_bandwidth_bytes_per_s: float


def _median_time(fn, repeats: int = 7) -> float:  # noqa: ANN001
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def measure_host_roofline(n: int = 1024, copy_mb: int = 256) -> HostRoofline:
    """Peak fp32 MAC/s from an n x n matmul; bandwidth from copying ``copy_mb`` MB."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    t_mm = _median_time(lambda: torch.mm(a, b))
    src = torch.empty(copy_mb * 2**20 // 4)
    dst = torch.empty_like(src)
    t_copy = _median_time(lambda: dst.copy_(src), repeats=5)
    return HostRoofline(peak_macs_per_s=n**3 / t_mm, memory_bandwidth_bytes_per_s=2 * src.numel() * 4 / t_copy)


def segment_bytes_moved(report: ProfileReport) -> list[int]:
    moved = []
    previous = report.input_bytes.raw
    for seg in report.segments:
        moved.append(seg.weight_bytes + previous + seg.out_bytes)
        previous = seg.out_bytes
    return moved


def roofline_ms(macs: float, nbytes: float, peak_macs_per_s: float, bandwidth: float) -> tuple[float, str]:
    compute, memory = macs / peak_macs_per_s, nbytes / bandwidth
    return (max(compute, memory) * 1e3, "compute" if compute >= memory else "memory")


def project(report: ProfileReport, target: ComputeProfile, host: HostRoofline) -> Projection:
    moved = segment_bytes_moved(report)
    if target.efficiency is not None:
        efficiency, source = target.efficiency, "profile"
    else:
        host_roof = sum(roofline_ms(s.macs, b, host.peak_macs_per_s, host.memory_bandwidth_bytes_per_s)[0]
                        for s, b in zip(report.segments, moved))
        measured = sum(s.latency_ms.median for s in report.segments)
        efficiency, source = min(1.0, host_roof / measured), "calibrated"
    segments = []
    for seg, nbytes in zip(report.segments, moved):
        ms, bound = roofline_ms(seg.macs, nbytes, target.peak_macs_per_s, target.memory_bandwidth_bytes_per_s)
        segments.append(ProjectedSegment(name=seg.name, latency_ms=round(ms / efficiency, 5), bound=bound))
    return Projection(target=target.name, target_kind=target.kind, efficiency=round(efficiency, 5),
                      efficiency_source=source, segments=segments,
                      total_latency_ms=round(sum(s.latency_ms for s in segments), 5))
