"""The ``aiflow`` command: one Typer app, one sub-command per pipeline verb."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from aiflow_cli import __version__
from aiflow_cli.cli import compress, profile, serve_pair, split
from aiflow_cli.cli.common import state

app = typer.Typer(
    name="aiflow",
    help="Run large models across a device, an edge server and the cloud: profile a model segment by "
         "segment, choose where to split it for a link, compress it, export matched ONNX pairs, serve them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"aiflow {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors (also AIFLOW_DEBUG=1).")] = False,
) -> None:
    state.debug = debug or os.environ.get("AIFLOW_DEBUG", "") not in ("", "0")


app.command("profile")(profile.profile_cmd)
app.command("split")(split.split_cmd)
app.command("compress")(compress.compress_cmd)
app.command("serve-pair")(serve_pair.serve_pair_cmd)


def run() -> None:
    app()
