"""Slices of a transformers causal LM (Llama, SmolLM2, Qwen2) with the KV cache as plain tensors.

Each half of a split causal LM keeps the cache of its own layers, and in ONNX the cache cannot be
a Python object: every half takes ``past`` (key, value) per layer, (batch, kv_heads, past, head_dim),
and returns the grown ``present`` tensors. The layers, the rotary embedding and the attention are
transformers' own modules; a :class:`~transformers.cache_utils.DynamicCache` is filled from the
past tensors inside ``forward`` and read back out after the layers ran.

Two small pieces are ours, and why:

- the causal mask. transformers' ``create_causal_mask`` sizes the mask from the cache's first
  layer, which a server half (layers 15-29, say) never holds, so it would see no past at all; the
  mask here is the same rule (a new token sees every cached position and the new ones up to its
  own), built from the past length directly, additive so that eager and SDPA attention take it.
- positions: ``past + arange(new tokens)``, as ``generate`` computes them for an unpadded batch.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.cache_utils import DynamicCache

__all__ = ["KVLayers", "KVDevice", "KVServer", "KVCausalLM", "kv_causal_lm", "kv_halves"]


class KVLayers(nn.Module):
    """A run of consecutive decoder layers: hidden states, past (k, v) per layer -> hidden states,
    present (k, v) per layer."""

    def __init__(self, layers: list[nn.Module], rotary: nn.Module) -> None:
        super().__init__()
        self.layers, self.rotary = nn.ModuleList(layers), rotary

    def forward(self, h: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.layers:
            return (h,)
        batch, new = h.shape[:2]
        seen = past[0].shape[2]
        cache = DynamicCache()
        indices = [layer.self_attn.layer_idx for layer in self.layers]  # transformers' own, global
        for i, index in enumerate(indices):
            cache.update(past[2 * i], past[2 * i + 1], index)
        positions = (torch.arange(new, device=h.device) + seen)[None, :].expand(batch, -1)
        keys = torch.arange(seen + new, device=h.device)
        allowed = keys[None, :] <= positions[0][:, None]  # (new, seen + new)
        mask = torch.zeros(allowed.shape, dtype=h.dtype, device=h.device).masked_fill(~allowed, torch.finfo(h.dtype).min)
        mask = mask[None, None].expand(batch, 1, -1, -1)
        position_embeddings = self.rotary(h, positions)
        for layer in self.layers:
            out = layer(h, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
                        cache_position=positions[0], position_embeddings=position_embeddings)
            h = out[0] if isinstance(out, tuple) else out
        present: list[torch.Tensor] = []
        for index in indices:
            present += [cache.layers[index].keys, cache.layers[index].values]
        return (h, *present)


class KVDevice(nn.Module):
    """input_ids, past (k, v) per device layer -> hidden_states, present (k, v) per device layer."""

    def __init__(self, embed_tokens: nn.Module, layers: KVLayers) -> None:
        super().__init__()
        self.embed_tokens, self.layers = embed_tokens, layers

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.layers(self.embed_tokens(input_ids), *past)


class KVServer(nn.Module):
    """hidden_states, past (k, v) per server layer -> logits, present (k, v) per server layer."""

    def __init__(self, layers: KVLayers, norm: nn.Module, lm_head: nn.Module) -> None:
        super().__init__()
        self.layers, self.norm, self.lm_head = layers, norm, lm_head

    def forward(self, hidden: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, *present = self.layers(hidden, *past)
        return (self.lm_head(self.norm(h)), *present)


class KVCausalLM(nn.Module):
    """The whole model with its cache: input_ids, past (k, v) per layer -> logits, present (k, v) per
    layer (a speculative-decoding draft or target, a compressed model timed per decoded token)."""

    def __init__(self, embed_tokens: nn.Module, layers: KVLayers, norm: nn.Module, lm_head: nn.Module) -> None:
        super().__init__()
        self.body = KVDevice(embed_tokens, layers)
        self.norm, self.lm_head = norm, lm_head

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, *present = self.body(input_ids, *past)
        return (self.lm_head(self.norm(h)), *present)


def kv_halves(hf_model: nn.Module, n_device: int) -> tuple[KVDevice, KVServer]:
    """The device half (embeddings + the first ``n_device`` layers) and the server half (the rest +
    final norm + LM head) of a transformers causal LM."""
    base = hf_model.model
    device = KVDevice(base.embed_tokens, KVLayers(list(base.layers[:n_device]), base.rotary_emb)).eval()
    server = KVServer(KVLayers(list(base.layers[n_device:]), base.rotary_emb), base.norm, hf_model.lm_head).eval()
    return device, server


def kv_causal_lm(hf_model: nn.Module) -> KVCausalLM:
    """A transformers Llama-family causal LM as a :class:`KVCausalLM`."""
    base = hf_model.model
    return KVCausalLM(base.embed_tokens, KVLayers(list(base.layers), base.rotary_emb), base.norm,
                      hf_model.lm_head).eval()
