"""Text helpers over a :class:`SegmentedModel`: sentence embeddings and greedy generation.

Both run through the segment chain, so they exercise exactly what a split will run.
"""

from __future__ import annotations

import torch

from aiflow_cli.errors import InputError
from aiflow_cli.models.segmented import SegmentedModel

__all__ = ["embed_sentences", "greedy_generate"]


@torch.no_grad()
def embed_sentences(model: SegmentedModel, sentences: list[str], max_length: int = 256) -> torch.Tensor:
    if model.task != "sentence-embedding":
        raise InputError(f"{model.name} is a {model.task} model, not a sentence encoder")
    enc = model.tokenizer(sentences, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return model.run_chain((enc["input_ids"], enc["attention_mask"]))


@torch.no_grad()
def greedy_generate(model: SegmentedModel, prompt: str | torch.Tensor, max_new_tokens: int = 32) -> torch.Tensor:
    """Greedy decoding with a KV cache through the segment chain; returns the new token ids (1, n)."""
    if model.task != "causal-lm":
        raise InputError(f"{model.name} is a {model.task} model, not a causal LM")
    ids = model.tokenizer(prompt, return_tensors="pt")["input_ids"] if isinstance(prompt, str) else prompt
    state = model.extras["kv_state"]
    state.start(model.extras["config"])
    try:
        new = []
        step = ids
        for _ in range(max_new_tokens):
            logits = model.run_chain(step)
            step = logits[:, -1:].argmax(-1)
            new.append(step)
            if model.tokenizer.eos_token_id is not None and int(step) == model.tokenizer.eos_token_id:
                break
        return torch.cat(new, dim=1)
    finally:
        state.clear()
