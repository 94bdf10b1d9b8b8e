"""Score a split model's logits against the unsplit model on one part of the data."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from aiflow_cli.schemas.bottleneck import Scores
from aiflow_cli.split.bottleneck.features import SplitFeatures
from aiflow_cli.stats import drop_of, share

__all__ = ["kl_to_unsplit", "score_predictions", "score_logits"]


def kl_to_unsplit(logits: torch.Tensor, teacher: torch.Tensor) -> float:
    """Mean KL(unsplit || split) in nats."""
    return float(F.kl_div(F.log_softmax(logits, -1), F.log_softmax(teacher, -1), log_target=True,
                          reduction="batchmean"))


def score_predictions(pred: torch.Tensor, part: SplitFeatures, kl: float | None = None) -> Scores:
    correct = (pred == part.labels).numpy()
    return Scores(top1=share(correct), agreement=share((pred == part.logits.argmax(-1)).numpy()),
                  drop=drop_of(part.reference_correct.numpy(), correct,
                               None if part.groups is None else part.groups.numpy()), kl=kl)


def score_logits(logits: torch.Tensor, part: SplitFeatures) -> Scores:
    return score_predictions(logits.argmax(-1), part, round(kl_to_unsplit(logits, part.logits), 6))
