"""``aiflow serve-pair``: run an exported device/server pair across a link."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aiflow_cli.cli.common import cli_errors
from aiflow_cli.errors import AiflowError

__all__ = ["serve_pair_cmd"]


@cli_errors
def serve_pair_cmd(
    export_dir: Annotated[Path, typer.Argument(metavar="DIR", help="A folder written by aiflow split --export.")],
) -> None:
    """Serve an exported device/server pair across a real or emulated link (and speculative decoding).

    Not available in this version: no issue is open for it yet.
    """
    raise AiflowError("aiflow serve-pair is not available in this version yet", "it needs aiflow split --export first")
