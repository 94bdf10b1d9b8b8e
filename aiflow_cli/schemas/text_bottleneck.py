"""``aiflow split --bottleneck --json`` for text models: bytes per token against task fidelity.

Fidelity is measured against the unsplit model on the same tokens: next-token top-1 agreement
for causal LMs, cosine of the sentence embedding for sentence encoders. The codec trains on
WikiText-2 *valid* (first 3/4 of its windows), every choice (beta, the uniform baseline's step)
is made on the last 1/4 (*validation*), and every figure is reported on WikiText-2 *test*, with
the number of windows and a 95% interval that resamples whole windows.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from aiflow_cli.schemas.base import Strict
from aiflow_cli.schemas.bottleneck import DataSplit
from aiflow_cli.schemas.figures import Mean

__all__ = ["TEXT_BOTTLENECK_SCHEMA_VERSION", "TextScores", "TextRatePoint", "TextOperatingPoint",
           "TextBottleneckReport"]

TEXT_BOTTLENECK_SCHEMA_VERSION = "aiflow.text-bottleneck/1"


class TextScores(Strict):
    fidelity: Mean = Field(description="next-token agreement (causal LM) or embedding cosine (encoder) with the "
                                       "unsplit model, over text windows")
    kl: Optional[float] = Field(None, description="causal LM: mean next-token KL(unsplit || split) in nats per token")
    worst: Optional[float] = Field(None, description="encoder: the lowest cosine of any test sentence")


class TextRatePoint(Strict):
    """One codec at the cut: the learned bottleneck at one beta, or a baseline."""

    codec: str = Field(description="learned, fp16, int8-zstd or uniform-qSTEP")
    beta: Optional[float] = None
    step: Optional[float] = Field(None, description="uniform: the quantiser step in standard deviations")
    bytes_per_token: float = Field(description="test: coded bytes (one message per window, header included) / tokens")
    validation_bytes_per_token: float
    validation: TextScores
    test: TextScores
    train_seconds: Optional[float] = None


class TextOperatingPoint(Strict):
    """Chosen on validation: the fewest bytes whose validation fidelity reaches ``min_fidelity``
    with the lower end of its 95% interval;
    the uniform quantiser's step is chosen by the same rule, so both are compared at equal fidelity."""

    beta: float
    chosen_on: Literal["validation"] = "validation"
    meets_min_fidelity_on_validation: bool = Field(description="false: no beta qualified; the most faithful was taken")
    test_bytes_per_token: float
    test_fidelity: Mean
    int8_zstd_bytes_per_token: float
    ratio_to_int8_zstd: float = Field(description="test bytes per token, learned / int8-channel+zstd")
    fp16_bytes_per_token: float
    uniform_step: Optional[float] = Field(None, description="the coarsest uniform step that reaches min_fidelity on "
                                                            "validation (None: none did)")
    uniform_bytes_per_token: Optional[float] = None
    uniform_test_fidelity: Optional[Mean] = None
    ratio_to_uniform: Optional[float] = None
    uniform_bytes_at_equal_fidelity: Optional[float] = Field(
        None, description="test: bytes per token the uniform curve needs for the learned point's test fidelity "
                          "(log-interpolated between its two neighbouring steps)")


class TextBottleneckReport(Strict):
    schema_version: Literal["aiflow.text-bottleneck/1"] = TEXT_BOTTLENECK_SCHEMA_VERSION
    model: str
    cut: str
    task: Literal["next-token", "sentence-embedding"]
    fidelity: str = Field(description="what fidelity measures, in words")
    min_fidelity: float
    hidden_size: int
    data: DataSplit = Field(description="inputs are text windows (causal LM) or sentences (encoder)")
    train_tokens: int
    validation_tokens: int
    test_tokens: int
    points: list[TextRatePoint]
    baselines: list[TextRatePoint]
    operating_point: Optional[TextOperatingPoint] = None
