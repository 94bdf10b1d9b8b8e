"""Output folders that appear whole or not at all: built in a temporary sibling, renamed into place.

Every command that writes a folder (an export, a compressed model) checks first that it can
(``check_output_dir``, before any long work) and then writes through ``staged_dir``: a crash,
an error, Ctrl-C or a SIGTERM leaves nothing half-written behind.

``stop_on_signals`` makes SIGINT and SIGTERM stop a command within ``STOP_SECONDS``: the signal
raises ``KeyboardInterrupt`` (so every ``finally`` cleans up), and should the process be inside a
long native call that does not return in time, a watchdog removes the open staging folders itself
and ends the process.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from aiflow_cli.errors import OutputError

__all__ = ["check_output_dir", "staged_dir", "replace_dir", "stop_on_signals", "STOP_SECONDS"]

STOP_SECONDS = 1.0  # after SIGINT / SIGTERM, the most a command keeps running
_open: set[Path] = set()  # staging folders in use: what the watchdog removes


def _remove_open() -> None:
    for path in list(_open):
        shutil.rmtree(path, ignore_errors=True)


def stop_on_signals() -> None:
    """SIGINT and SIGTERM: ``KeyboardInterrupt`` now, and at most ``STOP_SECONDS`` later the open
    staging folders removed and the process ended (exit 128 + the signal's number)."""
    import signal
    import threading

    def handler(signum: int, _frame: object) -> None:
        def watchdog() -> None:
            _remove_open()
            os._exit(128 + signum)

        timer = threading.Timer(STOP_SECONDS, watchdog)
        timer.daemon = True
        timer.start()
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def check_output_dir(out_dir: Path, force: bool, option: str = "--export") -> None:
    """Fail before any work if ``out_dir`` cannot become the output directory (named by ``option``)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a directory", f"choose another {option} path")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise OutputError(f"{out_dir}: directory is not empty", "pass --force to replace it, or choose another path")
    parent = out_dir.parent
    while not parent.exists() and parent != parent.parent:  # staged_dir creates missing parents
        parent = parent.parent
    try:
        probe = tempfile.mkdtemp(prefix=f".{out_dir.name}.probe-", dir=parent)
        os.rmdir(probe)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot write in {parent} ({exc.strerror or exc.__class__.__name__})",
                          f"choose a {option} path in a folder you can write to") from None


def replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move a finished ``tmp`` into place, replacing ``out_dir`` only once ``tmp`` is complete."""
    backup = None
    if out_dir.exists():
        backup = out_dir.with_name(f".{out_dir.name}.old-{tmp.name[-8:]}")
        out_dir.rename(backup)
    tmp.rename(out_dir)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


@contextmanager
def staged_dir(out_dir: Path, force: bool, option: str = "--export") -> Iterator[Path]:
    """Yield a temporary sibling of ``out_dir``; move it into place only if the block succeeds."""
    check_output_dir(out_dir, force, option)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    _open.add(tmp)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        for path in [tmp, *tmp.rglob("*")]:  # mkdtemp made it private; give it the usual modes
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
        replace_dir(tmp, out_dir)
    finally:
        _open.discard(tmp)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
