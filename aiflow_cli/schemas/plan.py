"""``plan.json`` (``aiflow split --json``): ranked cuts per link and a plan table over link rates."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from aiflow_cli.schemas.base import Strict

__all__ = ["PLAN_SCHEMA_VERSION", "Candidate", "LinkPlan", "PlanRow", "NodeInfo", "CapacityPoint", "ServerCapacity",
           "SensitivityRow", "Sensitivity", "SplitPlan"]

PLAN_SCHEMA_VERSION = "aiflow.plan/2"


class Candidate(Strict):
    """One way to run the model: ``cut`` is a cut name, ``device-only`` or ``server-only``."""

    cut: str
    device_ms: float
    encode_ms: float
    transfer_ms: float = Field(description="bytes / uplink rate (+ result bytes / downlink rate)")
    rtt_ms: float
    server_ms: float
    decode_ms: float
    total_ms: float
    bytes: int = Field(description="bytes sent device -> server for one request")


class LinkPlan(Strict):
    name: str
    rate_bytes_per_s: float
    rtt_ms: float
    best_cut: str
    candidates: list[Candidate] = Field(description="ranked, fastest first")


class PlanRow(Strict):
    min_rate_bytes_per_s: float
    max_rate_bytes_per_s: float
    cut: str


class NodeInfo(Strict):
    name: str
    kind: Literal["device", "server"]
    source: Literal["measured", "projected"]
    file: str
    runtime: str = Field(description="measured: the runtime timed; projected: the target runtime assumed")
    runtime_assumed: bool = Field(default=False, description="projected with per-kernel figures that no source backs")


class CapacityPoint(Strict):
    batch: int
    server_ms: float = Field(description="projected time of one batch through the server half (excludes waiting to fill it)")
    requests_per_s: float
    devices: int = Field(description="devices sustained at the per-device request rate")
    fits_memory: bool | None


class ServerCapacity(Strict):
    """How many devices one server sustains when it batches their requests (projected)."""

    cut: str
    runtime: str
    requests_per_device_per_s: float
    points: list[CapacityPoint]


class SensitivityRow(Strict):
    factor: float = Field(description="multiplier on the side's per-kernel, host per-kernel and per-call overheads")
    best_cut: dict[str, str] = Field(description="link name -> best cut")
    plan_table: list[PlanRow]


class Sensitivity(Strict):
    """The cut choice when an assumed figure is off by a factor (``aiflow split --sensitivity``)."""

    side: Literal["device", "server"]
    runtime: str
    rows: list[SensitivityRow]


class SplitPlan(Strict):
    schema_version: Literal["aiflow.plan/2"] = PLAN_SCHEMA_VERSION
    model: str
    model_fingerprint: str
    codec: str
    device: NodeInfo
    server: NodeInfo
    links: list[LinkPlan]
    plan_table: list[PlanRow] = Field(description="best cut per uplink-rate interval, at the first link's RTT")
    plan_table_rtt_ms: float
    capacity: list[ServerCapacity] = Field(default_factory=list)
    sensitivity: list[Sensitivity] = Field(default_factory=list)
