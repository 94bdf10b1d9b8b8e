"""WikiText-2 from ``../shared/data/wikitext-2``: valid for calibration/training, test for reporting."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from aiflow_cli.data.imagenet import default_data_root

__all__ = ["wikitext_path", "wikitext_sentences", "FALLBACK_SENTENCES"]

FALLBACK_SENTENCES = [
    "The device runs the first layers of the model and sends only what the task needs.",
    "An edge server finishes the computation and returns the result.",
    "Uploading raw sensor data over a slow wireless link takes too long.",
    "Split inference chooses the cut point from measured costs and the link rate.",
]


def wikitext_path(split: Literal["valid", "test"]) -> Path:
    return default_data_root() / "wikitext-2" / f"{split}.txt"


def wikitext_sentences(split: Literal["valid", "test"], count: int, min_words: int = 8) -> list[str] | None:
    """The first ``count`` body lines (no headings, at least ``min_words`` words); None when absent."""
    path = wikitext_path(split)
    if not path.is_file():
        return None
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("=") or len(line.split()) < min_words:
                continue
            out.append(line)
            if len(out) == count:
                break
    return out
