"""``bench.json`` (``aiflow serve-pair bench --json``): measured vs predicted, per pair, link and component."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from aiflow_cli.schemas.base import Strict
from aiflow_cli.schemas.figures import Share

__all__ = ["BENCH_SCHEMA_VERSION", "Component", "PairLinkResult", "Protocol", "BenchReport", "AdaptVariant", "AdaptReport"]

BENCH_SCHEMA_VERSION = "aiflow.serve-bench/1"


class Component(Strict):
    """One part of a request's latency: the median measured over the requests, and the plan's prediction."""

    name: Literal["device", "encode", "network", "server", "total"]
    measured_ms: float
    predicted_ms: Optional[float] = None
    error: Optional[float] = Field(None, description="(predicted - measured) / measured")


class PairLinkResult(Strict):
    model: str
    cut: str
    codec: str
    link: str
    rate_bytes_per_s: float
    rtt_ms: float
    requests: int
    succeeded: int
    retried: int
    failed: int
    exited: int = Field(0, description="answered by an early exit on the device (nothing sent; not in the medians)")
    components: list[Component]
    total_p50_ms: float
    total_p90_ms: float
    total_p99_ms: float
    codec_bytes: float = Field(description="median codec bytes per request")
    protocol_bytes: float = Field(description="median request body minus codec bytes: frames + the v2 JSON header")
    top1: Optional[Share] = Field(None, description="with labelled inputs")
    predictions: list[int] = Field(default_factory=list, description="top-1 per request, in order")
    predicted_for: str = Field("", description="the runtime and source of each side's prediction (from the manifest)")


class Protocol(Strict):
    """What the serving stack adds to every request, measured on loopback without a link before the
    links are benched: the plan's cost model knows the codec's bytes, not these."""

    request_bytes: float = Field(description="median request body minus codec bytes (frames + v2 JSON header)")
    response_bytes: float = Field(description="median answer body (outputs + v2 JSON header)")
    stack_ms: float = Field(description="median loopback round trip minus server time: HTTP client and server, "
                                        "JSON, copies")


class BenchReport(Strict):
    schema_version: Literal["aiflow.serve-bench/1"] = BENCH_SCHEMA_VERSION
    export: str
    engine: str
    inputs: str
    pinning: str = Field(description="which cores device and server ran on")
    limits: dict[str, float] = Field(description="total and component error bounds the run is judged by")
    protocol: dict[str, Protocol] = Field(default_factory=dict, description="per model, measured before the links")
    results: list[PairLinkResult]
    passed: bool = Field(description="every total and every component within its bound")


class AdaptVariant(Strict):
    variant: str = Field(description="a fixed cut, or 'adaptive'")
    requests: int
    failed: int
    median_ms: float = Field(description="measured median total over the trace")
    mean_ms: float
    predicted_median_ms: float = Field(description="median of the cost model at the trace's rate when each request "
                                                   "left (adaptive: the best pair at that rate), protocol included")
    predicted_mean_ms: float
    median_ms_by_rate: dict[str, float] = Field(default_factory=dict, description="bytes/s -> measured median")
    choices: dict[str, int] = Field(default_factory=dict, description="adaptive: requests sent per cut")


class AdaptReport(Strict):
    schema_version: Literal["aiflow.serve-adapt/1"] = "aiflow.serve-adapt/1"
    export: str
    engine: str
    inputs: str
    pinning: str
    trace: list[list[float]] = Field(description="(seconds, bytes/s) rate changes, both directions")
    rtt_ms: float
    seconds: float
    variants: list[AdaptVariant]
    best_fixed: str
    worst_fixed: str
