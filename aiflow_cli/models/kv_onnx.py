"""A Llama-family causal LM as one ONNX graph with a KV cache: ``input_ids`` + ``past_key_i`` /
``past_value_i`` -> ``logits`` + ``present_key_i`` / ``present_value_i`` (decodes one token per
call). Shared by the speculative export (draft and target) and by ``compress`` (decode latency)."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch

from aiflow_cli.models.kv_halves import kv_causal_lm
from aiflow_cli.onnx_io import Exporter, export_onnx, export_onnx_file
from aiflow_cli.schemas.manifest import TensorDecl

__all__ = ["kv_lm_onnx", "kv_lm_onnx_file", "kv_decls", "Positional"]


def kv_decls(prefix: str, layers: int, kv_heads: int, head_dim: int, length: str) -> list[TensorDecl]:
    return [TensorDecl(name=f"{prefix}_{kind}_{i}", shape=["batch", kv_heads, length, head_dim], dtype="float32")
            for i in range(layers) for kind in ("key", "value")]


class Positional(torch.nn.Module):
    """Let export_onnx pass a tuple example as positional tensors."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return self.module(*x)


def _interface(hf_model: torch.nn.Module) -> tuple[torch.nn.Module, tuple, list[TensorDecl], list[TensorDecl]]:
    cfg = hf_model.config
    lm = kv_causal_lm(hf_model)
    layers = cfg.num_hidden_layers
    kv_heads = cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    seq = ["batch", "sequence"]
    inputs = [TensorDecl(name="input_ids", shape=seq, dtype="int64"),
              *kv_decls("past", layers, kv_heads, head_dim, "past_sequence")]
    outputs = [TensorDecl(name="logits", shape=[*seq, cfg.vocab_size], dtype="float32"),
               *kv_decls("present", layers, kv_heads, head_dim, "total_sequence")]
    example = (torch.tensor([[1, 2, 3]]), *[torch.zeros(1, kv_heads, 2, head_dim) for _ in range(2 * layers)])
    return Positional(lm), example, inputs, outputs


def _axes(decls: list[TensorDecl]) -> dict[str, dict[int, str]]:
    return {d.name: {i: a for i, a in enumerate(d.shape) if isinstance(a, str)} for d in decls}


@torch.no_grad()
def kv_lm_onnx(hf_model: torch.nn.Module, exporter: Exporter = "dynamo"
               ) -> tuple[onnx.ModelProto, list[TensorDecl], list[TensorDecl]]:
    """(graph, input declarations, output declarations)."""
    module, example, inputs, outputs = _interface(hf_model)
    proto = export_onnx(module, example, [d.name for d in inputs], [d.name for d in outputs], _axes(inputs + outputs),
                        exporter=exporter)
    return proto, inputs, outputs


@torch.no_grad()
def kv_lm_onnx_file(hf_model: torch.nn.Module, path: Path, exporter: Exporter = "dynamo"
                    ) -> tuple[list[TensorDecl], list[TensorDecl]]:
    """The same graph written to ``path`` (with its weights in external data)."""
    module, example, inputs, outputs = _interface(hf_model)
    export_onnx_file(module, example, path, [d.name for d in inputs], [d.name for d in outputs],
                     _axes(inputs + outputs), exporter=exporter)
    return inputs, outputs
