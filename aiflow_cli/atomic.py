"""Write files so that a reader never sees half of one: temp file, then rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from aiflow_cli.errors import OutputError

__all__ = ["check_writable", "write_bytes_atomic", "write_text_atomic", "write_figure_atomic"]


def check_writable(path: Path) -> Path:
    """Fail early (before any long measurement) if ``path`` cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory", "give a file name")
    if not parent.is_dir():
        raise OutputError(f"{path}: folder {parent} does not exist", "create it or choose another path")
    try:  # really try: permission bits say nothing for root or read-only mounts
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{path}: not writable ({exc.strerror})", "choose a path you can write to") from exc
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{path}: not writable", "choose a path you can write to")
    return path


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path = check_writable(Path(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it the mode open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_figure_atomic(fig: Any, path: Path, dpi: int = 110) -> None:
    """Lay out a matplotlib figure, write it as a PNG (temp file, then rename) and close it."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
