"""A full causal LM (ids -> logits, no cache) built from the explicit-KV layers, for ONNX export."""

from __future__ import annotations

import torch
from torch import nn

from aiflow_cli.models.kv_layers import KVDecoderLayer

__all__ = ["FullCausalLM"]


class FullCausalLM(nn.Module):
    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        base = hf_model.model
        cfg = hf_model.config
        self.embed_tokens, self.norm, self.lm_head = base.embed_tokens, base.norm, hf_model.lm_head
        self.layers = nn.ModuleList(KVDecoderLayer(layer, base.rotary_emb) for layer in base.layers)
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.embed_tokens(input_ids)
        empty = h.new_zeros(input_ids.shape[0], self.kv_heads, 0, self.head_dim)
        for layer in self.layers:
            h, _, _ = layer(h, empty, empty)
        return self.lm_head(self.norm(h))
