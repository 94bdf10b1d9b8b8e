"""``plan.json`` (``aiflow split --json``): ranked cuts per link and a plan table over link rates."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from aiflow_cli.schemas.base import Strict

__all__ = ["PLAN_SCHEMA_VERSION", "Candidate", "LinkPlan", "PlanRow", "NodeInfo", "SplitPlan"]

PLAN_SCHEMA_VERSION = "aiflow.plan/1"


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


class SplitPlan(Strict):
    schema_version: Literal["aiflow.plan/1"] = PLAN_SCHEMA_VERSION
    model: str
    model_fingerprint: str
    codec: str
    device: NodeInfo
    server: NodeInfo
    links: list[LinkPlan]
    plan_table: list[PlanRow] = Field(description="best cut per uplink-rate interval, at the first link's RTT")
    plan_table_rtt_ms: float
