"""The one reader for every file a user hands the tool: YAML/JSON into pydantic models, text, bytes.

Every failure becomes one clear line naming the file (and the field): missing, a directory,
unreadable, not UTF-8, too large, malformed, wrong top-level type, wrong or missing field, a
number that is not finite. YAML is data, never code: ``yaml.safe_load`` only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from aiflow_cli.errors import ConfigError

__all__ = ["MAX_FILE_BYTES", "read_bytes", "read_text", "read_mapping", "validate_file", "describe_validation_error",
           "check_finite"]

M = TypeVar("M", bound=BaseModel)
MAX_FILE_BYTES = 64 * 2**20  # a manifest with entropy tables is ~1 MB; a profile ~20 KB


def read_bytes(path: Path, what: str = "file", max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of ``path``, or a :class:`ConfigError` saying in one line why not."""
    path = Path(path)
    try:
        if path.is_dir():
            raise ConfigError(f"{path}: is a directory, expected a {what}", "give the path of the file itself")
        size = path.stat().st_size
        if size > max_bytes:
            raise ConfigError(f"{path}: {size:,} bytes is too large for a {what} (limit {max_bytes:,})",
                              "check that this is the right file")
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found", "check the path") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied", "make the file readable or copy it somewhere readable") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc.__class__.__name__})", "check the path") from None


def read_text(path: Path, what: str = "file", max_bytes: int = MAX_FILE_BYTES) -> str:
    data = read_bytes(path, what, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); a {what} must be a text file",
                          "check that this is the right file") from None


def read_mapping(path: Path, what: str = "file") -> dict:
    """Parse a YAML or JSON file that must hold a mapping at the top level."""
    path = Path(path)
    is_json = path.suffix == ".json"
    text = read_text(path, what)
    try:
        data = json.loads(text) if is_json else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError, RecursionError) as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else (
            f" at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else "")
        raise ConfigError(f"{path}: malformed {'JSON' if is_json else 'YAML'}{line}", "fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {_kind(data)}",
                          f"a {what} is a mapping of field: value")
    return data


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true/false",
            type(None): "an empty document"}.get(type(value), type(value).__name__)


def check_finite(data: Any, path: Path, where: str = "") -> None:
    """Refuse NaN and infinity anywhere in parsed data (YAML reads `.inf` and `.nan` as floats)."""
    if isinstance(data, float) and not math.isfinite(data):
        raise ConfigError(f"{path}: field '{where or '(top level)'}': {data} is not a finite number",
                          "give a finite number")
    if isinstance(data, dict):
        for k, v in data.items():
            check_finite(v, path, f"{where}.{k}" if where else str(k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            check_finite(v, path, f"{where}.{i}" if where else str(i))


def describe_validation_error(path: Path | str, exc: ValidationError) -> str:
    """One line naming up to three fields and what is wrong with each (never the whole value)."""
    parts = []
    for err in exc.errors()[:3]:
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        kind = err["type"]
        if kind == "missing":
            parts.append(f"missing field '{field}'")
        elif kind == "extra_forbidden":
            parts.append(f"unknown field '{field}'")
        else:
            parts.append(f"field '{field}': {err['msg'][:120]}")
    more = len(exc.errors()) - 3
    return f"{path}: " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def validate_file(path: Path, model: type[M], data: dict | None = None, hint: str = "see profiles/README.md for the format",
                  what: str = "file") -> M:
    """Validate ``path`` (already parsed as ``data`` if given) against ``model``."""
    data = read_mapping(path, what) if data is None else data
    check_finite(data, path)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(path, exc), hint) from None
