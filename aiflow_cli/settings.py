"""The base of every verb's settings: one pydantic model holds a verb's defaults and checks, once.

The CLI builds a settings object from its options and hands it to the verb's one library entry
(:mod:`aiflow_cli.api`); a script or a test builds the same object directly. Every default lives on
a field, and the CLI reads it from there (``Settings.defaults()``), so a default is written once.

A value that fails a check raises :class:`~aiflow_cli.errors.InputError` naming the command-line
flag the field is spelled as (``--seq-len must be at least 1, got 0``), not pydantic's multi-line
report: bad input is one line and exit 2 wherever it comes from.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from aiflow_cli.errors import InputError

__all__ = ["Settings", "flag_of", "split_list"]

S = TypeVar("S", bound="Settings")


def flag_of(field: str, flags: dict[str, str] | None = None) -> str:
    """The command-line spelling of a settings field: ``seq_len`` -> ``--seq-len``."""
    return (flags or {}).get(field) or "--" + field.replace("_", "-")


def split_list(value: Any) -> Any:
    """Comma-separated text (``1,8,32``) as a list; lists and None pass through. For ``mode="before"``
    validators, so that ``--server-batch 1,8,32`` and ``server_batch=[1, 8, 32]`` both work."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _message(error: dict[str, Any], flags: dict[str, str]) -> str:
    """pydantic's error as the one line a user reads: the flag, the rule, the value given."""
    where = flag_of(str(error["loc"][0]), flags) if error.get("loc") else "settings"
    ctx, value, kind = error.get("ctx") or {}, error.get("input"), error.get("type", "")
    if kind in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        if kind == "greater_than_equal" and bound == 0:
            return f"{where} must be 0 or more, got {value}"
        rule = "at least" if kind == "greater_than_equal" else "above"
        return f"{where} must be {rule} {bound}, got {value}"
    if kind in ("less_than_equal", "less_than"):
        bound = ctx.get("le", ctx.get("lt"))
        rule = "at most" if kind == "less_than_equal" else "below"
        return f"{where} must be {rule} {bound}, got {value}"
    if kind == "literal_error":
        return f"{where} must be one of {ctx.get('expected', '')}, got '{value}'"
    if kind == "extra_forbidden":
        return f"{where}: unknown setting"
    if kind == "missing":
        return f"{where} is required"
    text = str(error.get("msg", "invalid value"))
    text = text.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return f"{where}: {text}" if value is None or isinstance(value, (dict, list)) else f"{where} '{value}': {text}"


class Settings(BaseModel):
    """A verb's settings. Subclasses declare fields with ``Field(default, description=...)``: the
    description is the option's ``--help`` text, the default its default."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_assignment=True)

    #: fields whose command-line flag is not ``--field-name`` (``exits`` is ``--exit``)
    flags: ClassVar[dict[str, str]] = {}

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InputError(_message(exc.errors()[0], self.flags)) from None

    @model_validator(mode="before")
    @classmethod
    def _none_is_an_empty_list(cls, data: Any) -> Any:
        """A repeatable option not given on the command line arrives as None: an empty list."""
        if isinstance(data, dict):
            empty = [k for k, v in data.items() if v is None and k in cls.model_fields
                     and cls.model_fields[k].default_factory is list]
            data = {**data, **{k: [] for k in empty}}
        return data

    @classmethod
    def defaults(cls: type[S]) -> S:
        """Every field's default (required fields left out): what the CLI shows and falls back to."""
        return cls.model_construct()

    @classmethod
    def help(cls, field: str) -> str:
        """The field's description: the ``--help`` text of its option."""
        return cls.model_fields[field].description or ""

    @classmethod
    def from_options(cls: type[S], options: dict[str, Any]) -> S:
        """Build from a command's parameters: those named like a field are taken, the rest (rendering
        options such as ``--json``) are left to the command."""
        return cls(**{k: v for k, v in options.items() if k in cls.model_fields})
