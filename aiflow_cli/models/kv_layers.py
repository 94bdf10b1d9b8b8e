"""Llama-family decoder layers with the KV cache as explicit tensors, for ONNX export.

Each half of a split causal LM keeps the cache of its own layers. In ONNX the cache cannot be
a Python object, so every layer takes ``past_key``/``past_value`` (batch, kv_heads, past, head_dim)
and returns the grown ``present`` tensors. The math is the same as transformers' eager path::

    h = x + o_proj(softmax(q k^T * scale + causal_mask) v)     q, k rotated by RoPE at their positions
    y = h + mlp(post_attention_layernorm(h))                     (pre-norm on both branches)
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["KVDecoderLayer", "KVDevice", "KVServer", "KVCausalLM", "kv_causal_lm"]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class KVDecoderLayer(nn.Module):
    def __init__(self, layer: nn.Module, rotary: nn.Module) -> None:
        super().__init__()
        attn = layer.self_attn
        self.input_layernorm, self.post_attention_layernorm, self.mlp = (
            layer.input_layernorm, layer.post_attention_layernorm, layer.mlp)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj
        self.head_dim = attn.head_dim
        self.n_rep = attn.num_key_value_groups
        self.scaling = attn.scaling
        self.register_buffer("inv_freq", rotary.inv_freq.detach().clone(), persistent=False)
        self.rope_scale = float(getattr(rotary, "attention_scaling", 1.0))

    def forward(self, x: torch.Tensor, past_key: torch.Tensor, past_value: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, s, _ = x.shape
        past = past_key.shape[2]
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(b, s, -1, self.head_dim).transpose(1, 2)  # (b, heads, s, d)
        k = self.k_proj(h).view(b, s, -1, self.head_dim).transpose(1, 2)  # (b, kv_heads, s, d)
        v = self.v_proj(h).view(b, s, -1, self.head_dim).transpose(1, 2)
        positions = torch.arange(s, device=x.device) + past  # absolute positions of the new tokens
        freqs = positions[:, None].float() * self.inv_freq[None, :]  # (s, d/2)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos() * self.rope_scale, emb.sin() * self.rope_scale
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        k = torch.cat([past_key, k], dim=2)  # (b, kv_heads, past + s, d)
        v = torch.cat([past_value, v], dim=2)
        kr = k.repeat_interleave(self.n_rep, dim=1)  # grouped-query attention: share kv heads
        vr = v.repeat_interleave(self.n_rep, dim=1)
        scores = (q @ kr.transpose(2, 3)) * self.scaling  # (b, heads, s, past + s)
        keys = torch.arange(k.shape[2], device=x.device)
        allowed = keys[None, :] <= positions[:, None]
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        attn = torch.softmax(scores, dim=-1) @ vr  # (b, heads, s, d)
        h = x + self.o_proj(attn.transpose(1, 2).reshape(b, s, -1))
        return h + self.mlp(self.post_attention_layernorm(h)), k, v


class KVDevice(nn.Module):
    """input_ids, past (k, v) per device layer -> hidden_states, present (k, v) per device layer."""

    def __init__(self, embed_tokens: nn.Module, layers: list[KVDecoderLayer]) -> None:
        super().__init__()
        self.embed_tokens, self.layers = embed_tokens, nn.ModuleList(layers)

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.embed_tokens(input_ids)
        present: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            h, k, v = layer(h, past[2 * i], past[2 * i + 1])
            present += [k, v]
        return (h, *present)


class KVServer(nn.Module):
    """hidden_states, past (k, v) per server layer -> logits, present (k, v) per server layer."""

    def __init__(self, layers: list[KVDecoderLayer], norm: nn.Module, lm_head: nn.Module) -> None:
        super().__init__()
        self.layers, self.norm, self.lm_head = nn.ModuleList(layers), norm, lm_head

    def forward(self, hidden: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = hidden
        present: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            h, k, v = layer(h, past[2 * i], past[2 * i + 1])
            present += [k, v]
        return (self.lm_head(self.norm(h)), *present)


class KVCausalLM(nn.Module):
    """The whole model with its cache: input_ids, past (k, v) per layer -> logits, present (k, v) per layer
    (a speculative-decoding draft or target)."""

    def __init__(self, embed_tokens: nn.Module, layers: list[KVDecoderLayer], norm: nn.Module,
                 lm_head: nn.Module) -> None:
        super().__init__()
        self.body = KVDevice(embed_tokens, layers)
        self.norm, self.lm_head = norm, lm_head

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, *present = self.body(input_ids, *past)
        return (self.lm_head(self.norm(h)), *present)


def kv_causal_lm(hf_model: nn.Module) -> KVCausalLM:
    """A transformers Llama-family causal LM (Llama, SmolLM2, Qwen2) as a :class:`KVCausalLM`."""
    base = hf_model.model
    layers = [KVDecoderLayer(layer, base.rotary_emb) for layer in base.layers]
    return KVCausalLM(base.embed_tokens, layers, base.norm, hf_model.lm_head).eval()
