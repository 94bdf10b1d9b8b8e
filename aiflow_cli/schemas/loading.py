"""Load YAML/JSON files into pydantic models, turning every failure into one clear line.

YAML is data, never code: ``yaml.safe_load`` only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from aiflow_cli.errors import ConfigError

__all__ = ["read_mapping", "validate_file", "describe_validation_error"]

M = TypeVar("M", bound=BaseModel)


def read_mapping(path: Path) -> dict:
    """Parse a YAML or JSON file that must hold a mapping at the top level."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found", "check the path")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{path}: malformed {'JSON' if path.suffix == '.json' else 'YAML'}{line}",
                          "fix the syntax") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def describe_validation_error(path: Path, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        kind = err["type"]
        if kind == "missing":
            parts.append(f"missing field '{field}'")
        elif kind == "extra_forbidden":
            parts.append(f"unknown field '{field}'")
        else:
            parts.append(f"field '{field}': {err['msg']}")
    return f"{path}: " + "; ".join(parts)


def validate_file(path: Path, model: type[M], data: dict | None = None) -> M:
    """Validate ``path`` (already parsed as ``data`` if given) against ``model``."""
    data = read_mapping(path) if data is None else data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(path, exc), "see profiles/README.md for the format") from exc
