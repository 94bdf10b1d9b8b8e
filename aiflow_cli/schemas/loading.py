"""The one reader for every file a user hands the tool: YAML/JSON into pydantic models, text, bytes.

Every failure becomes one clear line naming the file (and the field): missing, a directory,
unreadable, not UTF-8, too large, malformed, wrong top-level type, wrong or missing field, a
number that is not finite, an unknown ``schema_version``. YAML is data, never code: a safe loader
only, and a bounded one: a YAML file is at most ``MAX_YAML_BYTES``, and at most ``MAX_ALIASES``
aliases are followed (a kilobyte of nested aliases can otherwise stand for billions of nodes that
every later walk pays for).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from aiflow_cli.errors import ConfigError

__all__ = ["MAX_FILE_BYTES", "MAX_YAML_BYTES", "MAX_ALIASES", "read_bytes", "read_text", "read_mapping",
           "validate_file", "describe_validation_error", "check_finite", "check_schema_version", "safe_yaml"]

M = TypeVar("M", bound=BaseModel)
MAX_FILE_BYTES = 64 * 2**20  # a manifest with entropy tables is ~1 MB; a profile ~20 KB
MAX_YAML_BYTES = 2**20  # recipes and hardware profiles are a few KB
MAX_ALIASES = 100  # YAML aliases followed in one document
MAX_NODES = 100_000  # values a YAML document may stand for once its aliases are expanded


def _expanded_size(root: yaml.Node) -> int:
    """How many nodes ``root`` stands for with every alias expanded, counted on the composed graph
    (each shared node once, with a memo) and without recursion."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else (
            list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        if children_done:
            sizes[id(node)] = min(1 + sum(sizes[id(c)] for c in children), MAX_NODES + 1)
        else:
            stack.append((node, True))
            stack += [(c, False) for c in children if id(c) not in sizes]
    return sizes[id(root)]


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that stops after ``MAX_ALIASES`` aliases, and before constructing a
    document that would expand to more than ``MAX_NODES`` values."""

    aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_ALIASES} aliases")
        return super().compose_node(parent, index)

    def construct_document(self, node: Any) -> Any:
        if _expanded_size(node) > MAX_NODES:
            raise yaml.YAMLError(f"its aliases expand to more than {MAX_NODES:,} values")
        return super().construct_document(node)


def safe_yaml(text: str) -> Any:
    """Parse YAML as data, following at most ``MAX_ALIASES`` aliases (a ``yaml.YAMLError`` past that)."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


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
    text = read_text(path, what, MAX_FILE_BYTES if is_json else MAX_YAML_BYTES)
    try:
        data = json.loads(text) if is_json else safe_yaml(text)
    except (yaml.YAMLError, json.JSONDecodeError, RecursionError) as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else (
            f" at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else "")
        why = f": {exc}" if isinstance(exc, yaml.YAMLError) and "alias" in str(exc) else ""
        raise ConfigError(f"{path}: malformed {'JSON' if is_json else 'YAML'}{line}{why}", "fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {_kind(data)}",
                          f"a {what} is a mapping of field: value")
    return data


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true/false",
            type(None): "an empty document"}.get(type(value), type(value).__name__)


def check_finite(data: Any, path: Path, where: str = "") -> None:
    """Refuse NaN and infinity anywhere in parsed data (YAML reads `.inf` and `.nan` as floats).
    Walked with a stack, so a deeply nested file cannot overflow Python's."""
    stack = [(data, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(f"{path}: field '{at or '(top level)'}': {item} is not a finite number",
                              "give a finite number")
        if isinstance(item, dict):
            stack += [(v, f"{at}.{k}" if at else str(k)) for k, v in item.items()]
        elif isinstance(item, list):
            stack += [(v, f"{at}.{i}" if at else str(i)) for i, v in enumerate(item)]


def check_schema_version(path: Path, data: dict, reads: str, required: bool = True,
                         hint: str = "write it with this version of aiflow") -> None:
    """Refuse a file whose ``schema_version`` this aiflow does not read, naming the one it does
    (``required=False``: a file written by hand may leave it out)."""
    version = data.get("schema_version")
    if version is None and not required:
        return
    if version != reads:
        raise ConfigError(f"{path}: field 'schema_version': {str(version)[:40]!r} is not one this aiflow reads "
                          f"({reads!r})", hint)


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
