"""The ``aiflow`` command: one Typer app, one sub-command per pipeline verb."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from aiflow_cli import __version__
from aiflow_cli.cli import compress, profile, serve_pair, split
from aiflow_cli.cli.common import err_console, state


class OneLineUsageErrors(TyperGroup):
    """Option and argument errors (Click's usage errors) as one stderr line and exit 2, like every
    other bad input, instead of a usage block and a boxed message."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except Exception as exc:  # Typer keeps Click private: recognise its usage errors by their API
            if type(exc).__name__ == "Abort":  # Click's wrapper of KeyboardInterrupt (SIGINT, SIGTERM)
                raise KeyboardInterrupt from None
            if not (hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)):
                raise
            if not standalone_mode:
                raise
            ctx = getattr(exc, "ctx", None)
            where = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
            if exc.format_message():  # empty: the help was shown instead (no arguments given)
                err_console.print(f"[bold red]error:[/] {exc.format_message()}{where}", highlight=False,
                                  soft_wrap=True)
            sys.exit(exc.exit_code)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    name="aiflow",
    cls=OneLineUsageErrors,
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
app.add_typer(split.app, name="split")
app.command("compress")(compress.compress_cmd)
app.add_typer(serve_pair.app, name="serve-pair")


def run() -> None:
    from aiflow_cli.staging import stop_on_signals

    stop_on_signals()
    try:
        app()
    except KeyboardInterrupt:  # every staging folder is gone by now (their finally blocks ran)
        err_console.print("stopped", highlight=False)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)  # skip interpreter teardown (torch, onnxruntime): seconds we promised not to take
