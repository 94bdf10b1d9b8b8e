"""Figures that carry their own uncertainty: a share with its sample size and 95% interval, and a
paired top-1 drop with its interval. Built by :mod:`aiflow_cli.stats`; used by every report."""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from aiflow_cli.schemas.base import Strict

__all__ = ["Share", "Drop", "Mean"]


class Share(Strict):
    """A share measured on ``n`` inputs (top-1, agreement, exit rate) with its 95% Wilson interval."""

    value: float
    n: int
    ci95: tuple[float, float]


class Drop(Strict):
    """Top-1 points lost against a reference on the same ``n`` inputs (positive = worse), with a
    95% paired-bootstrap interval."""

    points: float
    n: int
    ci95: tuple[float, float] = Field(description="95% paired-bootstrap interval, in points")
    se: Optional[float] = Field(None, description="bootstrap standard error, in points (absent in older reports)")
    units: Optional[int] = Field(None, description="independent units resampled when fewer than n (an image and its "
                                                   "mirrored copy are one); absent: every input is one")

    def upper_bound(self, z: float) -> float:
        """The estimate ``z`` standard errors up (the estimate itself where no error was recorded)."""
        return self.points + z * (self.se or 0.0)

    def supports_within(self, limit: float) -> bool:
        """Whether the interval (not only the estimate) keeps the drop within ``limit`` points."""
        return self.ci95[1] <= limit + 1e-9


class Mean(Strict):
    """A mean over ``n`` independent units (sentences, text windows) of a per-unit figure such as
    embedding cosine or next-token agreement, with a 95% bootstrap interval over those units
    (tokens of one window are not independent, so windows are resampled, not tokens)."""

    value: float
    n: int
    ci95: tuple[float, float]
