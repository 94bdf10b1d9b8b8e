"""The base every file contract shares: unknown fields are errors (typos fail at load time), and
numbers are finite (JSON's ``Infinity``/``NaN`` and YAML's ``.inf``/``.nan`` are refused)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Strict"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
