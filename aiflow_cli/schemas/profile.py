"""``profile.json``: what ``aiflow profile`` measured, segment by segment between cut points.

This is a stable, documented format (docs/formats.md) that ``aiflow split`` reads. Bump
``SCHEMA_VERSION`` on any incompatible change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from aiflow_cli.errors import ConfigError
from aiflow_cli.schemas.base import Strict
from aiflow_cli.schemas.loading import check_schema_version, read_mapping, validate_file

__all__ = [
    "SCHEMA_VERSION", "KernelCounts", "Latency", "ModelInfo", "HostInfo", "Settings", "SegmentProfile",
    "InputBytes", "Totals", "DecodeProfile", "Stability", "ProjectedSegment", "Projection", "ProfileReport",
    "load_profile",
]

SCHEMA_VERSION = "aiflow.profile/3"


class Latency(Strict):
    median: float = Field(ge=0)
    p90: float = Field(ge=0)
    stable: bool = Field(description="false when p90 is far above the median (see Stability)")


class Stability(Strict):
    """Whether the timings can be trusted, and why not.

    A busy machine shows itself four ways: this process off the cores for much of the timed wall
    time (read from its own CPU time), and, from the timings alone, a tail far above the median
    (p90 / median), medians that drift between the alternating rounds, and a sum of segment
    medians far from the whole-model median taken in the same rounds.
    """

    stable: bool
    whole_p90_over_median: float
    round_drift: float = Field(description="largest / smallest whole-model median over the rounds")
    sum_over_whole: float = Field(description="sum of segment medians / whole-model median")
    unstable_segments: int
    on_cpu_share: float | None = Field(None, description="this process's CPU time / wall time over the timed "
                                       "runs (CPU only); well under 1 means other processes held the cores")
    warnings: list[str] = Field(default_factory=list)


class ModelInfo(Strict):
    spec: str = Field(description="the --model value")
    name: str
    task: Literal["image-classification", "sentence-embedding", "causal-lm", "generic"]
    fingerprint: str = Field(description="sha256 over parameter names, shapes and values")


class HostInfo(Strict):
    cpu: str
    cores: int
    threads: int
    platform: str
    python: str
    libraries: dict[str, str]
    accelerator: str | None = Field(default=None, description="the GPU the segments ran on (--on cuda)")


class Settings(Strict):
    batch: int
    seq_len: int | None
    runtime: Literal["torch", "onnxruntime", "cuda-graph"] = Field(description=(
        "torch: PyTorch eager; onnxruntime: each segment exported and run in onnxruntime; cuda-graph: each "
        "segment captured as a CUDA graph and replayed (on: cuda only)"))
    on: Literal["cpu", "cuda"] = Field(default="cpu", description="where the segments ran")
    repeats: int
    warmup: int


class KernelCounts(Strict):
    """Kernels one forward pass of a segment launches, by class, and the activation bytes they
    read and write (see ``profiling/kernels.py``)."""

    ops: int = Field(ge=0, description="every op that launches work (views and reshapes launch nothing)")
    normalization: int = Field(ge=0, description="of which inference-mode norms (folded into the op before at export)")
    pointwise: int = Field(ge=0, description="of which element-wise ops (fused into their producer by some runtimes)")
    traffic_bytes: int | None = Field(default=None, ge=0, description=(
        "activation bytes all these ops read and write, weights excluded (null: unknown, e.g. an ONNX source)"))
    normalization_traffic_bytes: int | None = Field(default=None, ge=0)
    pointwise_traffic_bytes: int | None = Field(default=None, ge=0)

    def launched(self, fuses: list[str] | tuple[str, ...] = ()) -> int:
        """Kernels left when a runtime fuses the named classes into the kernel before them (at least 1)."""
        fused = ("normalization" in fuses) * self.normalization + ("pointwise" in fuses) * self.pointwise
        return max(1, self.ops - fused) if self.ops else 0

    def traffic(self, fuses: list[str] | tuple[str, ...] = ()) -> int | None:
        """Activation bytes moved when the named classes are fused (their reads and writes vanish)."""
        if self.traffic_bytes is None:
            return None
        fused = (("normalization" in fuses) * (self.normalization_traffic_bytes or 0)
                 + ("pointwise" in fuses) * (self.pointwise_traffic_bytes or 0))
        return max(0, self.traffic_bytes - fused)


class SegmentProfile(Strict):
    name: str
    latency_ms: Latency
    decode_latency_ms: Latency | None = Field(default=None, description="causal LMs: one decode step with KV cache")
    macs: int
    decode_macs: int | None = None
    params: int
    weight_bytes: int
    peak_memory_bytes: int = Field(description="peak bytes of tensors alive inside the segment (activations)")
    out_bytes: int = Field(description="bytes of the tensor(s) leaving this segment; for all but the last, what crosses the cut after it")
    out_shapes: list[list[int]]
    kernels: KernelCounts = Field(description="from the traced torch graph (or the ONNX graph of an .onnx source)")


class InputBytes(Strict):
    raw: int
    jpeg_q90: int | None = None
    tokens: int | None = Field(default=None, description="token ids as int32")


class Totals(Strict):
    macs: int
    params: int
    weight_bytes: int
    latency_ms_whole_model: Latency
    latency_ms_sum_of_segment_medians: float
    decode_latency_ms_whole_model: Latency | None = None
    call_overhead_ms: float = Field(description=(
        "fixed cost of running one piece of the model as its own call (runtime call, thread-pool wake-up, "
        "fusions lost at the boundary): (sum of segment medians - whole) / (segments - 1), at least 0"))


class DecodeProfile(Strict):
    """Causal LMs: the prompt length used for prefill and the cache length for decode."""

    prefill_tokens: int
    decode_cache_tokens: int


class ProjectedSegment(Strict):
    name: str
    latency_ms: float = Field(description="max(device work, host launch work); the per-call cost is in the total only")
    compute_ms: float = Field(description="roofline / efficiency: max(MACs / peak, bytes / bandwidth) / efficiency")
    kernels: int = Field(description="kernels launched under the projection's runtime (after its fusions)")
    launch_ms: float = Field(description="kernels x per-kernel overhead on the device")
    host_ms: float = Field(description="kernels x host dispatch per kernel (overlaps device work)")
    bound: Literal["compute", "memory", "launch", "host"] = Field(description=(
        "what sets the time: compute or memory (roofline), launch (per-kernel overhead on the device) "
        "or host (dispatch on the host CPU)"))


class Projection(Strict):
    label: Literal["projected"] = "projected"
    target: str
    target_kind: str
    runtime: str = Field(description="the target runtime assumed (its per-kernel figures come from the hardware profile)")
    runtime_source: str
    runtime_assumed: bool = Field(description="true when the runtime's figures have no measurement or publication behind them")
    batch: int
    per_kernel_us: float
    host_per_kernel_us: float
    call_overhead_ms: float = Field(description="charged once per call (one side of a split is one call)")
    efficiency: float
    efficiency_source: Literal["calibrated", "profile"]
    segments: list[ProjectedSegment]
    total_latency_ms: float = Field(description="sum of segments + one call overhead")
    fits_memory: bool | None = Field(description="weights + batch x peak activations within the target's memory (null: unknown)")


class ProfileReport(Strict):
    schema_version: Literal["aiflow.profile/3"] = SCHEMA_VERSION
    model: ModelInfo
    host: HostInfo
    settings: Settings
    cuts: list[str]
    segments: list[SegmentProfile]
    input_bytes: InputBytes
    total: Totals
    decode: DecodeProfile | None = None
    projection: Projection | None = None
    stability: Stability
    inputs: str = Field(description="what the example input was (real photos, seeded token ids, or random)")

    def compute_latencies_ms(self) -> list[float]:
        """Per-segment latency without the per-call overhead (each segment's median minus it).

        A split side runs its segments as *one* call, so its time is the sum of these plus one
        :attr:`Totals.call_overhead_ms`; see :meth:`side_ms`.
        """
        return [max(0.0, s.latency_ms.median - self.total.call_overhead_ms) for s in self.segments]

    def side_ms(self, first: int, stop: int) -> float:
        """Predicted time of segments ``first .. stop-1`` run as one call (0 for an empty side)."""
        if first >= stop:
            return 0.0
        return sum(self.compute_latencies_ms()[first:stop]) + self.total.call_overhead_ms

    def cut_bytes(self) -> dict[str, int]:
        """Bytes crossing each cut, by cut name."""
        return {cut: seg.out_bytes for cut, seg in zip(self.cuts, self.segments)}


def load_profile(path: Path) -> ProfileReport:
    data = read_mapping(Path(path), "profile")
    check_schema_version(Path(path), data, SCHEMA_VERSION, hint="re-run aiflow profile MODEL --out FILE with this version")
    report = validate_file(Path(path), ProfileReport, data, hint="re-run aiflow profile MODEL --out FILE")
    if len(report.segments) != len(report.cuts) + 1:
        raise ConfigError(f"{path}: {len(report.cuts)} cuts but {len(report.segments)} segments",
                          "re-run aiflow profile")
    return report
