"""Options shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["ModelArg", "JsonOpt", "TrustRemoteCodeOpt", "TrustSourceOpt", "OutFileOpt"]

ModelArg = Annotated[str, typer.Argument(
    metavar="MODEL",
    help="zoo:efficientnet-lite0 | zoo:minilm-l6 | zoo:smollm2-135m | hf:ID_OR_PATH | FILE.onnx | py:module:function",
)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (no table).")]
TrustRemoteCodeOpt = Annotated[bool, typer.Option(
    "--trust-remote-code", help="Allow hf: models to run code from their repository. Off by default.")]
TrustSourceOpt = Annotated[bool, typer.Option(
    "--trust-source", help="Allow a model named in a file you pass (a manifest's source_model.spec, a recipe's "
                           "model:) to be a py:module:function, which imports and runs that Python code. Off by default: "
                           "a file you received cannot make aiflow run code.")]
OutFileOpt = Annotated[Optional[Path], typer.Option("--out", help="Write the JSON result to this file.")]
