"""Options shared by several commands, declared once, and the helpers that make an option from a
settings field (its flag, its help text; the command's default is read from the same field)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from aiflow_cli.settings import Settings, flag_of

__all__ = ["ModelArg", "JsonOpt", "TrustRemoteCodeOpt", "TrustSourceOpt", "OutFileOpt", "PlotOpt", "DirArg",
           "opt", "check_outputs"]

ModelArg = Annotated[str, typer.Argument(
    metavar="MODEL",
    help="zoo:efficientnet-lite0 | zoo:minilm-l6 | zoo:smollm2-135m | hf:ID_OR_PATH | FILE.onnx | py:module:function",
)]
DirArg = Annotated[Path, typer.Argument(metavar="DIR", help="A folder written by aiflow split --export.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (no table).")]
TrustRemoteCodeOpt = Annotated[bool, typer.Option(
    "--trust-remote-code", help="Allow hf: models to run code from their repository. Off by default.")]
TrustSourceOpt = Annotated[bool, typer.Option(
    "--trust-source", help="Allow a model named in a file you pass (a manifest's source_model.spec, a recipe's "
                           "model:) to be a py:module:function, which imports and runs that Python code. Off by default: "
                           "a file you received cannot make aiflow run code.")]
OutFileOpt = Annotated[Optional[Path], typer.Option("--out", help="Write the JSON result to this file.")]
PlotOpt = Annotated[Optional[Path], typer.Option("--plot", help="Write a PNG of the result to this file.")]


def opt(settings: type[Settings], field: str, *flags: str, **extra: Any) -> Any:
    """A ``typer.Option`` for a settings field: the flag from the field's name (or ``flags``), the help
    from its description. The default goes on the parameter, read from ``settings.defaults()``."""
    extra.setdefault("help", settings.help(field))
    return typer.Option(*(flags or (flag_of(field, settings.flags),)), **extra)


def check_outputs(*paths: Optional[Path]) -> None:
    """Refuse an output file that cannot be written before any work starts."""
    from aiflow_cli.atomic import check_writable

    for path in paths:
        if path is not None:
            check_writable(path)
