"""Options shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["ModelArg", "JsonOpt", "TrustRemoteCodeOpt", "OutFileOpt"]

ModelArg = Annotated[str, typer.Argument(
    metavar="MODEL",
    help="zoo:efficientnet-lite0 | zoo:minilm-l6 | zoo:smollm2-135m | hf:ID_OR_PATH | FILE.onnx | py:module:function",
)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (no table).")]
TrustRemoteCodeOpt = Annotated[bool, typer.Option(
    "--trust-remote-code", help="Allow hf: models to run code from their repository. Off by default.")]
OutFileOpt = Annotated[Optional[Path], typer.Option("--out", help="Write the JSON result to this file.")]
