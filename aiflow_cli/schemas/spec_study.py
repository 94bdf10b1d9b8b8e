"""The speculative-decoding study's result (``aiflow serve-pair bench --speculative``): TPOT against
the draft length k per link, with the baselines measured in the same run and the cost model's
prediction beside every measurement."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from aiflow_cli.schemas.base import Strict

__all__ = ["SPEC_STUDY_SCHEMA_VERSION", "StudyPoint", "LinkBaseline", "CostProbe", "SpecStudy"]

SPEC_STUDY_SCHEMA_VERSION = "aiflow.spec-study/1"


class CostProbe(Strict):
    """Costs measured apart from the study's runs (the prediction's inputs)."""

    draft_ms_per_token: float = Field(description="the draft alone, one token per pass, device core")
    verify_ms: dict[int, float] = Field(description="k -> the server's own time for one verification pass (median)")
    stack_ms: float = Field(description="a round trip on loopback minus the server's time: HTTP, JSON, client")
    request_header_bytes: int = Field(description="a round's HTTP body beyond its tensors' bytes (the v2 JSON header)")
    response_bytes: int = Field(description="the HTTP body of a round's answer")


class StudyPoint(Strict):
    link: str
    k: int | Literal["auto"]
    prompts: int
    tokens: int = Field(description="tokens generated after each prompt's first round (the decode phase)")
    tpot_ms: float = Field(description="measured: decode-phase time per output token")
    predicted_tpot_ms: float = Field(description="cost model: (k x draft + verify(k) + stack + RTT + bytes / rate) "
                                                 "per round, divided by the measured tokens per round")
    error: float = Field(description="predicted / measured - 1")
    tokens_per_round: float
    acceptance: float = Field(description="share of drafts accepted")
    acceptance_by_category: dict[str, float] = Field(default_factory=dict)
    request_bytes_per_round: float
    ks_chosen: list[int] = Field(default_factory=list, description="k auto: the k of each round")
    itemised: dict[str, list[float]] = Field(
        default_factory=dict, description="ms per decode round, [measured mean, cost model mean]: draft (device), "
                                          "server (the server's whole handling: verify(k) in the model), server_pass "
                                          "(the target's pass alone, part of server; 0: no separate term), "
                                          "stack_link (client call minus server time: encode, HTTP, link delay and "
                                          "transfer, decode), device_other (the device's handling of a round outside "
                                          "the call; no cost-model term, 0)")
    overlap: bool = Field(False, description="the device drafted the next block while each verification was in "
                                             "flight (--overlap)")
    ahead_used: float = Field(0.0, description="with overlap: share of decode rounds whose drafts were made during "
                                               "the previous round trip")


class LinkBaseline(Strict):
    link: str
    server_only_tpot_ms: float = Field(description="the target alone on the server, tokens returned at the end: "
                                                   "(time for N tokens - time for 1) / (N - 1)")


class SpecStudy(Strict):
    schema_version: Literal["aiflow.spec-study/1"] = SPEC_STUDY_SCHEMA_VERSION
    aiflow_version: str
    export: str
    draft: str
    target: str
    machine: str
    date: str
    prompts: int
    new_tokens: int
    probe: CostProbe
    device_only_tpot_ms: float = Field(description="the draft alone on the device (no link)")
    device_only_agreement: float = Field(description="share of the draft-alone greedy tokens equal to the target's, "
                                                     "position by position: its quality gap")
    colocated_tpot_ms: dict[int, float] = Field(description="k -> draft and target in one process on one core "
                                                            "(no link)")
    baselines: list[LinkBaseline]
    points: list[StudyPoint]
    best_k: dict[str, int] = Field(description="link -> the fixed k with the lowest measured TPOT (without overlap)")
    best_k_overlap: dict[str, int] = Field(default_factory=dict, description="link -> the same with --overlap")
    crossover_k: dict[str, int | None] = Field(description="link -> the smallest k above the best whose TPOT is worse "
                                                           "than server-only (None: none in the range)")
