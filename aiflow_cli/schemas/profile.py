"""``profile.json``: what ``aiflow profile`` measured, segment by segment between cut points.

This is a stable, documented format (docs/formats.md) that ``aiflow split`` reads. Bump
``SCHEMA_VERSION`` on any incompatible change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from aiflow_cli.schemas.base import Strict

from aiflow_cli.errors import ConfigError
from aiflow_cli.schemas.loading import validate_file

__all__ = [
    "SCHEMA_VERSION", "Latency", "ModelInfo", "HostInfo", "Settings", "SegmentProfile",
    "InputBytes", "Totals", "DecodeProfile", "ProjectedSegment", "Projection", "ProfileReport",
    "load_profile",
]

SCHEMA_VERSION = "aiflow.profile/1"


class Latency(Strict):
    median: float
    p90: float


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


class Settings(Strict):
    batch: int
    seq_len: int | None
    runtime: Literal["torch", "onnxruntime"]
    repeats: int
    warmup: int


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


class DecodeProfile(Strict):
    """Causal LMs: the prompt length used for prefill and the cache length for decode."""

    prefill_tokens: int
    decode_cache_tokens: int


class ProjectedSegment(Strict):
    name: str
    latency_ms: float
    bound: Literal["compute", "memory"]


class Projection(Strict):
    label: Literal["projected"] = "projected"
    target: str
    target_kind: str
    efficiency: float
    efficiency_source: Literal["calibrated", "profile"]
    segments: list[ProjectedSegment]
    total_latency_ms: float


class ProfileReport(Strict):
    schema_version: Literal["aiflow.profile/1"] = SCHEMA_VERSION
    model: ModelInfo
    host: HostInfo
    settings: Settings
    cuts: list[str]
    segments: list[SegmentProfile]
    input_bytes: InputBytes
    total: Totals
    decode: DecodeProfile | None = None
    projection: Projection | None = None

    def apportioned_latencies_ms(self) -> list[float]:
        """Per-segment latency that sums to the whole-model median.

        Running segments one by one costs a little more than the unsplit model (per-call
        overhead, fusions lost at the boundaries); a split pair runs as two calls, close to the
        whole model. So the segment medians are used as shares of the whole-model time.
        """
        medians = [s.latency_ms.median for s in self.segments]
        scale = self.total.latency_ms_whole_model.median / sum(medians)
        return [m * scale for m in medians]

    def cut_bytes(self) -> dict[str, int]:
        """Bytes crossing each cut, by cut name."""
        return {cut: seg.out_bytes for cut, seg in zip(self.cuts, self.segments)}


def load_profile(path: Path) -> ProfileReport:
    report = validate_file(Path(path), ProfileReport)
    if len(report.segments) != len(report.cuts) + 1:
        raise ConfigError(f"{path}: {len(report.cuts)} cuts but {len(report.segments)} segments",
                          "re-run aiflow profile")
    return report
