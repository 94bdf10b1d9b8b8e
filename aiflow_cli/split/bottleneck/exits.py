"""Early exits: a pool + linear head at a cut answers easy inputs on the device (as Edgent does).

Each head reads the global-average-pooled activation at its cut and is trained by
self-distillation (KL to the unsplit model's output) on the training split. Its confidence
(max softmax) must pass a threshold; the threshold is calibrated on images of the training split
that the head was *not* fitted on, as the lowest value whose accuracy drop there stays within
``max_drop`` (measured, label-free, as the share of inputs where the exit fires and disagrees
with the full model, an upper bound on the accuracy it can cost). The evaluation split then reports what the calibrated exit really does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aiflow_cli.split.bottleneck.features import CutFeatures

__all__ = ["ExitHead", "ExitResult", "train_exit", "ridge_map", "calibrate_threshold", "CALIBRATION_FRACTION"]

CALIBRATION_FRACTION = 0.25  # of the training classes, held out from fitting to calibrate the threshold


class ExitHead(nn.Module):
    """(N, C, H, W) activation -> logits: global average pool, a linear map into the classifier's
    input space, then the model's own (frozen, shared) classifier.

    Sharing the classifier is what lets a head trained on a few hundred images answer for
    classes it never saw: the evaluation split's classes are disjoint from the training split's.
    """

    def __init__(self, channels: int, classifier: nn.Linear) -> None:
        super().__init__()
        self.proj = nn.Linear(channels, classifier.in_features)
        self.classifier = classifier
        for p in self.classifier.parameters():
            p.requires_grad_(False)

    def pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.proj(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pooled(x.mean((2, 3)))


@dataclass
class ExitResult:
    cut: str
    head: ExitHead
    threshold: float
    calibration_drop: float  # points: share of held-out training inputs where the exit fires and disagrees
    exit_rate: float  # evaluation split
    exit_accuracy: float  # top-1 of the exited inputs, evaluation split
    metric: float  # top-1 with the exit in front of the full model, evaluation split
    drop: float  # reference top-1 minus metric, in points, evaluation split
    agreement: float  # with the unsplit model, evaluation split


@torch.no_grad()
def ridge_map(x: torch.Tensor, target: torch.Tensor, strength: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) minimising |x W^T + b - target|^2 + strength * mean(x^2) * n * |W|^2.

    A dense regression target (the classifier's input, ~1000 numbers per input) generalises from
    a few hundred inputs where class labels cannot.
    """
    mean_x, mean_t = x.mean(0), target.mean(0)
    xc, tc = (x - mean_x).double(), (target - mean_t).double()
    reg = strength * float(xc.pow(2).mean()) * len(x)
    w = torch.linalg.solve(xc.T @ xc + reg * torch.eye(x.shape[1], dtype=torch.float64), xc.T @ tc).T.float()
    return w, mean_t - w @ mean_x


def calibrate_threshold(confidence: torch.Tensor, disagrees: torch.Tensor, max_drop: float) -> tuple[float, float]:
    """The lowest max-softmax threshold whose label-free drop bound stays within half of ``max_drop``.

    An exit can only cost accuracy where it fires *and* disagrees with the full model, so that
    share (in points) bounds the drop; half the budget, because calibration sets are small.
    Returns (threshold, bound); threshold 1.0 (never fire) when nothing qualifies.
    """
    for t in torch.linspace(0.30, 0.99, 70).tolist():
        bound = 100 * float(((confidence >= t) & disagrees).float().mean())
        if bound <= max_drop / 2:
            return t, bound
    return 1.0, 0.0


def _decide(logits: torch.Tensor, final: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    conf = logits.softmax(-1).amax(-1)
    fired = conf >= threshold
    return fired, torch.where(fired, logits.argmax(-1), final.argmax(-1))


def train_exit(feats: CutFeatures, cut: str, classifier: nn.Linear, max_drop: float, ridge: float = 3.0,
               seed: int = 0) -> ExitResult:
    """Fit the head at ``cut`` (pooled features are cached for every cut) and calibrate it."""
    torch.manual_seed(seed)
    x_all, teacher, labels = feats.train_pooled[cut], feats.train_logits, feats.train_labels
    # Hold out whole classes: the evaluation split's classes are new to the model's heads, so the
    # threshold must be calibrated on classes the head was not fitted on either.
    classes = labels.unique()
    chosen = classes[torch.randperm(len(classes), generator=torch.Generator().manual_seed(seed))]
    held = torch.isin(labels, chosen[: max(1, int(len(classes) * CALIBRATION_FRACTION))])
    head = ExitHead(x_all.shape[1], classifier)
    w, b = ridge_map(x_all[~held], feats.train_penultimate[~held], ridge * 1e-2)
    with torch.no_grad():
        head.proj.weight.copy_(w)
        head.proj.bias.copy_(b)
        cal_logits, cal_final = head.pooled(x_all[held]), teacher[held]
        threshold, cal_drop = calibrate_threshold(cal_logits.softmax(-1).amax(-1),
                                                  cal_logits.argmax(-1) != cal_final.argmax(-1), max_drop)
        ev_logits = head.pooled(feats.eval_pooled[cut])
        fired, pred = _decide(ev_logits, feats.eval_logits, threshold)
        reference = float((feats.eval_logits.argmax(-1) == feats.eval_labels).float().mean())
        metric = float((pred == feats.eval_labels).float().mean())
        exit_acc = float((pred[fired] == feats.eval_labels[fired]).float().mean()) if fired.any() else 0.0
    return ExitResult(cut=cut, head=head.eval(), threshold=threshold, calibration_drop=cal_drop,
                      exit_rate=float(fired.float().mean()), exit_accuracy=exit_acc, metric=metric,
                      drop=100 * (reference - metric),
                      agreement=float((pred == feats.eval_logits.argmax(-1)).float().mean()))
