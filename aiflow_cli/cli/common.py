"""What every command shares: consoles, the error boundary, progress bars, output writing."""

from __future__ import annotations

import functools
import os
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from aiflow_cli.errors import AiflowError

__all__ = ["console", "err_console", "state", "cli_errors", "progress_bar", "fmt_bytes", "fmt_count", "show"]

console = Console()
err_console = Console(stderr=True)


class _State:
    debug: bool = os.environ.get("AIFLOW_DEBUG", "") not in ("", "0")


state = _State()

F = TypeVar("F", bound=Callable[..., Any])


def cli_errors(func: F) -> F:
    """Map :class:`AiflowError` to one stderr line and exit code 2 (traceback with --debug)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except AiflowError as exc:
            if state.debug:
                traceback.print_exc()
            err_console.print(f"[bold red]error:[/] {exc.one_line()}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar on stderr; yields ``update(label, done, total)``.

    Only on a terminal (a log or a pipe gets no bar), and started by the first update, so that an
    error raised before any work leaves stderr with nothing but its own line.
    """
    if not (enabled and err_console.is_terminal):
        yield lambda _label, _done, _total: None
        return
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err_console, transient=True)
    tasks: dict[str, Any] = {}

    def update(label: str, done: int, total: int) -> None:
        if not bar.live.is_started:
            bar.start()
        if label not in tasks:
            tasks[label] = bar.add_task(label, total=total)
        bar.update(tasks[label], completed=done, total=total)

    try:
        yield update
    finally:
        if bar.live.is_started:
            bar.stop()


def fmt_bytes(n: float) -> str:
    """Decimal units, three significant digits: 1.61MB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}B"


def fmt_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.4g}{unit}"
    return f"{n:.0f}"


def show(table: Table) -> None:
    """Print a table that wraps cells instead of cutting them: in an 80-column terminal a cut name or
    a number must never read as ``blo…`` or ``0.00…``."""
    for column in table.columns:
        column.overflow = "fold"
        column.no_wrap = False
    console.print(table)


def emit(text: str, out: Any | None, as_json: bool, plot: Any | None = None,
         draw: Callable[[Any], None] | None = None) -> bool:
    """Write a result's JSON ``text`` to ``out`` (atomically), draw its ``plot``, print the JSON for
    ``--json``. True when the JSON was printed (the caller renders nothing else)."""
    from aiflow_cli.atomic import write_text_atomic

    if out is not None:
        write_text_atomic(out, text + "\n")
    if plot is not None and draw is not None:
        draw(plot)
    if as_json:
        typer.echo(text)
    return as_json
