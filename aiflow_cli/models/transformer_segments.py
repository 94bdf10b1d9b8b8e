"""Cut Hugging Face transformers into segments: after the embeddings and after each layer.

Encoders (BERT family) pass ``(hidden_states, attention_mask)`` across every cut: the mask is
needed by every later layer, so it travels with the hidden states. Decoders (Llama family)
pass only ``hidden_states``; positions come from the KV cache each side keeps for its own
layers (:class:`KVState`), so nothing else has to cross the link.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from aiflow_cli.models.segmented import Segment

__all__ = ["KVState", "encoder_segments", "decoder_segments", "MeanPoolNormalize", "additive_mask"]


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, seq) 0/1 mask -> (batch, 1, 1, seq) additive mask for every attention head."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class EncoderEmbeddings(nn.Module):
    def __init__(self, embeddings: nn.Module) -> None:
        super().__init__()
        self.embeddings = embeddings

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        input_ids, mask = x
        return self.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids)), mask


class EncoderLayer(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, mask = x
        out = self.layer(hidden, attention_mask=additive_mask(mask, hidden.dtype))
        return (out[0] if isinstance(out, tuple) else out), mask


class MeanPoolNormalize(nn.Module):
    """Sentence-transformers pooling: mean over real tokens, then L2-normalise."""

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        hidden, mask = x
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=1)


class LastHidden(nn.Module):
    """Plain encoder output when no pooling head is wanted."""

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return x[0]


def encoder_segments(model: nn.Module, head: nn.Module) -> list[Segment]:
    """BERT-style ``model`` (``embeddings`` + ``encoder.layer``) -> embeddings, layer0..N-1, head."""
    segs = [Segment("embeddings", EncoderEmbeddings(model.embeddings))]
    segs += [Segment(f"layer{i}", EncoderLayer(layer)) for i, layer in enumerate(model.encoder.layer)]
    segs.append(Segment("pool" if isinstance(head, MeanPoolNormalize) else "output", head))
    return segs


class KVState:
    """The KV cache of one side of a split causal LM (or of the whole model).

    ``cache`` is None for a cache-free forward; a ``transformers`` Cache otherwise. Each decoder
    layer reads and appends its own entry, indexed by the layer's ``layer_idx``.
    """

    def __init__(self) -> None:
        self.cache: Any = None

    def start(self, config: Any) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache(config=config)

    def clear(self) -> None:
        self.cache = None


class DecoderEmbeddings(nn.Module):
    def __init__(self, embed_tokens: nn.Module) -> None:
        super().__init__()
        self.embed_tokens = embed_tokens

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)


class DecoderLayer(nn.Module):
    """One decoder layer that derives positions and the causal mask from its own cache length."""

    def __init__(self, layer: nn.Module, rotary: nn.Module, state: KVState) -> None:
        super().__init__()
        self.layer, self.rotary, self.state = layer, rotary, state

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        cache = self.state.cache
        idx = self.layer.self_attn.layer_idx
        past = cache.get_seq_length(idx) if cache is not None else 0
        q = hidden.shape[1]
        cache_position = torch.arange(past, past + q, device=hidden.device)
        position_ids = cache_position.unsqueeze(0)
        mask = None
        sdpa_causal = past == 0 and getattr(self.layer.self_attn.config, "_attn_implementation", "") == "sdpa"
        if q > 1 and not sdpa_causal:  # query i sees keys 0..past+i; additive mask (batch, 1, q, past+q)
            keys = torch.arange(past + q, device=hidden.device)
            allowed = keys[None, :] <= cache_position[:, None]
            mask = torch.zeros(allowed.shape, dtype=hidden.dtype, device=hidden.device)
            mask = mask.masked_fill(~allowed, torch.finfo(hidden.dtype).min)[None, None]
        out = self.layer(
            hidden,
            attention_mask=mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=cache is not None,
            cache_position=cache_position,
            position_embeddings=self.rotary(hidden, position_ids),
        )
        return out[0] if isinstance(out, tuple) else out


class DecoderHead(nn.Module):
    def __init__(self, norm: nn.Module, lm_head: nn.Module) -> None:
        super().__init__()
        self.norm, self.lm_head = norm, lm_head

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(hidden))


def decoder_segments(causal_lm: nn.Module, state: KVState) -> list[Segment]:
    """Llama-style causal LM -> embeddings, layer0..N-1, head (final norm + LM head)."""
    base = causal_lm.model
    segs = [Segment("embeddings", DecoderEmbeddings(base.embed_tokens))]
    segs += [Segment(f"layer{i}", DecoderLayer(layer, base.rotary_emb, state)) for i, layer in enumerate(base.layers)]
    segs.append(Segment("head", DecoderHead(base.norm, causal_lm.lm_head)))
    return segs


class CausalLMWhole(nn.Module):
    """The unsplit causal LM with the same calling convention as the chain: ids -> logits."""

    def __init__(self, causal_lm: nn.Module, state: KVState) -> None:
        super().__init__()
        self.causal_lm, self.state = causal_lm, state

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        cache = self.state.cache
        return self.causal_lm(input_ids=input_ids, past_key_values=cache, use_cache=cache is not None).logits


class EncoderWhole(nn.Module):
    def __init__(self, model: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.model, self.head = model, head

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        input_ids, mask = x
        hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return self.head((hidden, mask))
