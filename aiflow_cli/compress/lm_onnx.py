"""A full causal LM (ids -> logits, no cache) for ONNX export: the KV-cached model of
:mod:`aiflow_cli.models.kv_halves` (transformers' own layers) started on an empty cache."""

from __future__ import annotations

import torch
from torch import nn

from aiflow_cli.models.kv_halves import kv_causal_lm

__all__ = ["FullCausalLM"]


class FullCausalLM(nn.Module):
    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        cfg = hf_model.config
        self.lm = kv_causal_lm(hf_model)
        self.n_layers = cfg.num_hidden_layers
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        empty = torch.zeros(input_ids.shape[0], self.kv_heads, 0, self.head_dim)
        return self.lm(input_ids, *[empty] * (2 * self.n_layers))[0]
