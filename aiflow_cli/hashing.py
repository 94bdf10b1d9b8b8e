"""sha256 of files: manifests pin every artifact, model fetchers pin every wheel."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

__all__ = ["sha256_file", "vocabulary_sha256"]


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def vocabulary_sha256(vocab: dict[str, int]) -> str:
    """sha256 over a tokenizer's token -> id map, in id order: what a draft and a target, or a
    device and a server, must agree on."""
    ordered = sorted(vocab.items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(ordered, ensure_ascii=False).encode()).hexdigest()
