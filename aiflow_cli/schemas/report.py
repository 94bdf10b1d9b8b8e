"""``report.json`` written by ``aiflow compress``: before / after figures and every stage's own."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from aiflow_cli.schemas.base import Strict
from aiflow_cli.schemas.profile import HostInfo

__all__ = ["REPORT_SCHEMA_VERSION", "MetricValue", "Measured", "StageRecord", "CompressReport",
           "COMPRESSED_SCHEMA_VERSION", "CompressedModel"]

REPORT_SCHEMA_VERSION = "aiflow.compress-report/1"
COMPRESSED_SCHEMA_VERSION = "aiflow.compressed/1"


class MetricValue(Strict):
    name: str
    value: float
    extra: dict[str, float] = Field(default_factory=dict)


class Measured(Strict):
    size_bytes: int = Field(description="ONNX file size")
    weights: str = Field(default="", description="what the float weights are, where that matters (a dequantised "
                                                 "GGUF is not an fp32 original)")
    params: int = Field(description="parameters of the float torch model (quantisation keeps the count)")
    latency_ms: float = Field(description="onnxruntime median, same session options before and after")
    latency_p90_ms: float
    metric: MetricValue


class StageRecord(Strict):
    index: int
    kind: str
    method: str | None
    seconds: float
    figures: dict[str, Any]


class CompressReport(Strict):
    schema_version: Literal["aiflow.compress-report/1"] = REPORT_SCHEMA_VERSION
    model: str
    recipe: str
    data: str
    host: HostInfo
    latency_input: str
    before: Measured
    after: Measured
    latency_ratio_paired: float = Field(description="median over paired blocks of after/before latency")
    latency_ratios: list[float] = Field(default_factory=list, description="after/before per paired block")
    stages: list[StageRecord]
    seconds_total: float
    decode: dict[str, Any] | None = Field(
        default=None, description="causal LMs: a 64-token prompt then 64 tokens one at a time with a KV cache "
                                  "(model_with_past.onnx), before and after: before_prefill_ms, "
                                  "before_decode_ms_per_token, after_prefill_ms, after_decode_ms_per_token, notes")


class CompressedModel(Strict):
    """``compressed.json``: what a compressed DIR holds, so it can be a model source again."""

    schema_version: Literal["aiflow.compressed/1"] = COMPRESSED_SCHEMA_VERSION
    base_model: str
    task: str
    recipe: str
    architecture: Literal["efficientnet-lite", "hf-encoder", "hf-causal-lm"]
    quantized: bool
    files: dict[str, str] = Field(description="role -> file name: onnx, weights, hf_dir")
