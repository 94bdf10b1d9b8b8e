"""Sample sizes and 95% intervals for every accuracy figure aiflow reports.

Two intervals, both standard:

* a share ``k / n`` (top-1, agreement, exit rate) gets the Wilson score interval, which stays
  inside [0, 1] and behaves at 0 and n, where the normal approximation does not;
* a *difference* of two shares measured on the same inputs (the top-1 drop of a split against
  the unsplit model) gets a paired bootstrap: resample inputs with replacement, recompute the
  difference, take the 2.5% and 97.5% quantiles. Pairing matters: both models see the same
  images, so most of the per-image noise cancels.

A claim "drop within P points" is *supported* only when the upper end of the drop's interval is
at most P; a point estimate within P with an interval reaching past it is reported as such.
"""

from __future__ import annotations

import math

import numpy as np

from aiflow_cli.schemas.figures import Drop, Mean, Share

__all__ = ["Z95", "wilson_interval", "paired_difference_interval", "Share", "share", "Drop", "drop_of", "Mean", "clustered_mean"]

Z95 = 1.959963984540054
BOOTSTRAP_SAMPLES = 2000


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (n >= 1)."""
    if n < 1:
        raise ValueError("an interval needs at least one sample")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference_interval(a: np.ndarray, b: np.ndarray, samples: int = BOOTSTRAP_SAMPLES,
                               seed: int = 0, groups: np.ndarray | None = None) -> tuple[float, float, float]:
    """95% bootstrap interval of mean(a) - mean(b) for per-input scores measured on the same
    inputs, and the bootstrap standard error. With ``groups`` (one id per input), whole groups are
    resampled: an image and its mirrored copy err together, so they are one unit, not two."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("paired scores must be two 1-D arrays of the same non-zero length")
    diff = a - b
    rng = np.random.default_rng(seed)
    if groups is None:
        idx = rng.integers(0, len(diff), size=(samples, len(diff)))
        means = diff[idx].mean(axis=1)
    else:
        _, unit = np.unique(np.asarray(groups), return_inverse=True)
        means = _unit_ratios(np.bincount(unit, weights=diff), np.bincount(unit).astype(np.float64), samples, rng)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi), float(means.std(ddof=1))


def _unit_ratios(sums: np.ndarray, counts: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of sum(sums) / sum(counts), resampling whole units with replacement."""
    idx = rng.integers(0, len(sums), size=(samples, len(sums)))
    return sums[idx].sum(1) / np.maximum(counts[idx].sum(1), 1e-12)


def share(hits: np.ndarray | list[bool]) -> Share:
    hits = np.asarray(hits, dtype=bool)
    k, n = int(hits.sum()), int(hits.size)
    lo, hi = wilson_interval(k, n)
    return Share(value=k / n, n=n, ci95=(round(lo, 4), round(hi, 4)))


def drop_of(reference_correct: np.ndarray, correct: np.ndarray, groups: np.ndarray | None = None) -> Drop:
    """Drop in top-1 points of ``correct`` against ``reference_correct`` (per-input booleans);
    ``groups``: inputs that are not independent (an image and its mirror) share an id."""
    ref = np.asarray(reference_correct, dtype=np.float64)
    ours = np.asarray(correct, dtype=np.float64)
    lo, hi, se = paired_difference_interval(ref, ours, groups=groups)
    return Drop(points=round(100 * float(ref.mean() - ours.mean()), 4), n=len(ref),
                ci95=(round(100 * lo, 4), round(100 * hi, 4)), se=round(100 * se, 4),
                units=None if groups is None else int(len(np.unique(np.asarray(groups)))))


def clustered_mean(sums: np.ndarray | list[float], counts: np.ndarray | list[float], samples: int = BOOTSTRAP_SAMPLES,
                   seed: int = 0) -> Mean:
    """sum(sums) / sum(counts) over units (e.g. agreeing tokens and tokens per text window), with a
    95% bootstrap interval that resamples whole units, so correlation inside a unit is respected."""
    s, c = np.asarray(sums, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    if s.shape != c.shape or s.ndim != 1 or len(s) == 0 or c.sum() <= 0:
        raise ValueError("a clustered mean needs per-unit sums and positive counts of the same non-zero length")
    lo, hi = np.quantile(_unit_ratios(s, c, samples, np.random.default_rng(seed)), [0.025, 0.975])
    return Mean(value=round(float(s.sum() / c.sum()), 6), n=len(s), ci95=(round(float(lo), 6), round(float(hi), 6)))
