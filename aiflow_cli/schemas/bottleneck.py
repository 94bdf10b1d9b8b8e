"""``bottleneck.json`` (``aiflow split --bottleneck --json``): rate-accuracy points, baselines, exits, choice.

Every figure is measured on the evaluation split (class_index % 5 == 0) of the data folder;
training used only the training split.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from aiflow_cli.schemas.base import Strict

__all__ = ["BOTTLENECK_SCHEMA_VERSION", "RatePoint", "BaselinePoint", "ExitPoint", "JointChoice", "BottleneckReport"]

BOTTLENECK_SCHEMA_VERSION = "aiflow.bottleneck/1"


class RatePoint(Strict):
    cut: str
    beta: float
    bytes_per_input: float = Field(description="mean range-coded bytes per image, 8-byte header included")
    estimated_bytes_per_input: float = Field(description="mean -log2 p(q) / 8 under the coded tables")
    metric: float = Field(description="top-1 on the evaluation split")
    agreement: float = Field(description="top-1 agreement with the unsplit model")
    kl: float = Field(description="mean KL(unsplit || split) in nats")
    uniform_bytes_at_equal_agreement: Optional[float] = Field(
        None, description="bytes the uniform baseline at this cut needs for the same agreement (interpolated)")
    train_seconds: float
    encode_ms: float
    decode_ms: float
    latency_ms: dict[str, float] = Field(default_factory=dict, description="predicted per link (no exit)")


class BaselinePoint(Strict):
    name: str = Field(description="jpeg-qNN, fp16@CUT, int8-zstd@CUT or uniform-qSTEP@CUT")
    bytes_per_input: float
    metric: float
    agreement: float
    kl: Optional[float] = None


class ExitPoint(Strict):
    cut: str
    threshold: float = Field(description="max-softmax confidence at or above which the exit answers")
    calibration_drop: float
    exit_rate: float
    exit_accuracy: float
    metric: float
    drop: float = Field(description="top-1 points below the unsplit model with the exit in front of it")
    agreement: float
    compute_saved: float = Field(description="share of the model's MACs an exited input skips, averaged over inputs")


class JointChoice(Strict):
    link: str
    cut: str = Field(description="a cut, or device-only when nothing split beats running on the device")
    beta: Optional[float] = None
    exit: Optional[str] = None
    bytes_per_input: float
    metric: float
    drop: float
    expected_latency_ms: float


class BottleneckReport(Strict):
    schema_version: Literal["aiflow.bottleneck/1"] = BOTTLENECK_SCHEMA_VERSION
    model: str
    data: str
    train_inputs: int
    eval_inputs: int
    reference_metric: float = Field(description="top-1 of the unsplit model on the evaluation split")
    max_drop: float
    points: list[RatePoint]
    baselines: list[BaselinePoint]
    exits: list[ExitPoint] = Field(default_factory=list)
    chosen: list[JointChoice] = Field(default_factory=list, description="--auto: fastest plan per link within --max-drop")
    links: list[str] = Field(default_factory=list)
