"""``bottleneck.json`` (``aiflow split --bottleneck --json``): rate-accuracy points, baselines, exits, choice.

The data is split by class into train / validation / test (``split_rule``). Codecs and exit
heads are fitted on train; every choice (beta, cut, exit threshold, the exported operating
point, ``--auto``) is made on validation; figures are reported on test. Every accuracy figure
carries its sample size and a 95% interval (Wilson for shares, paired bootstrap for drops).
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from aiflow_cli.schemas.base import Strict
from aiflow_cli.schemas.figures import Drop, Share

__all__ = ["BOTTLENECK_SCHEMA_VERSION", "Scores", "RatePoint", "BaselinePoint", "ExitPoint", "JointChoice",
           "OperatingPoint", "DataSplit", "BottleneckReport"]

BOTTLENECK_SCHEMA_VERSION = "aiflow.bottleneck/2"


class Scores(Strict):
    """A split model (or a baseline) on one part of the data, against the unsplit model."""

    top1: Share
    agreement: Share = Field(description="top-1 agreement with the unsplit model")
    drop: Drop = Field(description="unsplit top-1 minus this top-1, in points, on the same inputs")
    kl: Optional[float] = Field(None, description="mean KL(unsplit || this) in nats, where there are logits")


class RatePoint(Strict):
    cut: str
    beta: float
    bytes_per_input: float = Field(description="test: mean range-coded bytes per image, 8-byte header included")
    estimated_bytes_per_input: float = Field(description="test: mean -log2 p(q) / 8 under the coded tables")
    validation_bytes_per_input: float
    validation: Scores
    selection: Optional[Scores] = Field(
        None, description="the training inputs (mirrors included) and validation together, through the deployed "
        "codec: the drop every choice reads")
    test: Scores
    uniform_bytes_at_equal_agreement: Optional[float] = Field(
        None, description="test: bytes the uniform baseline at this cut needs for the same agreement (interpolated)")
    train_seconds: float
    encode_ms: float
    decode_ms: float
    latency_ms: dict[str, float] = Field(default_factory=dict, description="predicted per link (no exit)")
    reconstruction: Optional[list[float]] = Field(
        None, description="where the server puts a rounded symbol: q + sign(q) x offset, for |q| = 1, 2, >= 3 "
        "(fitted on rounded training latents; all 0: none kept). Absent in reports made before the offsets")

    @property
    def choice(self) -> Drop:
        """The drop a choice reads: training inputs and validation together (``selection``), or
        validation alone in reports made before that existed."""
        return (self.selection or self.validation).drop

    @property
    def choice_drop(self) -> float:
        return self.choice.points


class BaselinePoint(Strict):
    name: str = Field(description="jpeg-qNN, fp16@CUT, int8-zstd@CUT or uniform-qSTEP@CUT")
    bytes_per_input: float = Field(description="test: mean bytes per input")
    test: Scores


class ExitPoint(Strict):
    """An early-exit head: fitted on train, threshold calibrated on validation, reported on test."""

    cut: str
    threshold: float = Field(description="max-softmax confidence at or above which the exit answers")
    calibration_bound: float = Field(description="validation: upper confidence bound (one standard error, Wilson) of "
                                                 "the points where the exit fires and disagrees; it bounds the drop")
    validation_exit_rate: float
    exit_rate: Share = Field(description="test: share of inputs that exit here")
    exit_top1: Optional[Share] = Field(None, description="test: top-1 of the inputs that exited")
    test: Scores = Field(description="test: the exit in front of the full model")
    compute_saved: float = Field(description="share of the model's MACs an exited input skips, averaged over inputs")


class JointChoice(Strict):
    """``--auto``: per link, the fastest plan whose drop, one standard error up, stays within ``max_drop``."""

    link: str
    cut: str = Field(description="a cut, or device-only when nothing split beats running on the device")
    beta: Optional[float] = None
    exit: Optional[str] = None
    bytes_per_input: float
    validation_drop: float = Field(description="points, the drop the choice read (a split alone: the training inputs "
                                               "and validation; with an exit: validation); it had to be within "
                                               "max_drop one standard error up")
    test_drop: Optional[Drop] = Field(None, description="the chosen plan's drop on test, with its interval")
    expected_latency_ms: float


class OperatingPoint(Strict):
    """The (cut, beta) exported: fewest validation bytes whose drop on the data choices read
    (``chosen_on``), ``choice_z`` standard errors up, is within ``max_drop``; with a byte target,
    the most accurate point there within it."""

    cut: str
    beta: float
    chosen_on: Literal["validation", "train+validation"] = Field(
        "validation", description="the drop read: validation alone, or the training inputs and validation together")
    target_bytes: float | None = Field(default=None, description="--target-bytes: the validation byte budget it met")
    choice_bound: Optional[float] = Field(
        None, description="points: the drop on chosen_on plus choice_z standard errors, what had to be within max_drop")
    choice_z: float = Field(0.0, description="standard errors added to the drop before comparing it with max_drop")
    within_max_drop_on_validation: bool = Field(
        description="within max_drop on the data it was chosen on (chosen_on); false: no point qualified, the most "
        "accurate there was taken")
    test_bytes_per_input: float
    test_drop: Drop
    test_supports_max_drop: bool = Field(description="the upper end of the test drop's 95% interval is <= max_drop")


class DataSplit(Strict):
    roots: list[str]
    rule: str
    train_inputs: int = Field(description="training inputs, mirrored copies included")
    augmented_inputs: int = Field(default=0, description="augmented views (random resized crops, flips) the codec also trained on")
    validation_inputs: int
    test_inputs: int


class BottleneckReport(Strict):
    schema_version: Literal["aiflow.bottleneck/2"] = BOTTLENECK_SCHEMA_VERSION
    model: str
    data: DataSplit
    reference_validation: Share = Field(description="top-1 of the unsplit model on validation")
    reference_test: Share = Field(description="top-1 of the unsplit model on test")
    max_drop: float
    patch: int = Field(default=1, description="block size the codec's transforms saw (--patch; reports before the "
                                              "field existed used 1)")
    shrinkage: Optional[float] = Field(None, description="--shrinkage of the transform's covariance and Fisher "
                                                         "estimates (absent in reports made before it was recorded)")
    points: list[RatePoint]
    baselines: list[BaselinePoint]
    exits: list[ExitPoint] = Field(default_factory=list)
    operating_point: Optional[OperatingPoint] = None
    chosen: list[JointChoice] = Field(default_factory=list, description="--auto: fastest plan per link within --max-drop")
    links: list[str] = Field(default_factory=list)
