"""Where aiflow keeps what it derives from model packages (``$AIFLOW_CACHE``, default ~/.cache/aiflow)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir(*parts: str) -> Path:
    root = Path(os.environ.get("AIFLOW_CACHE", Path.home() / ".cache" / "aiflow"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
