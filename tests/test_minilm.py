"""zoo:minilm-l6: transformers AutoModel + mean pooling + L2 norm == sentence-transformers."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from aiflow_cli.models.text import embed_sentences

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"


def test_embeddings_match_sentence_transformers_reference(minilm):
    ref = json.loads(REFERENCE.read_text())
    ours = embed_sentences(minilm, ref["sentences"])
    expected = torch.tensor(ref["embeddings"])
    cosine = torch.nn.functional.cosine_similarity(ours, expected, dim=1)
    assert cosine.min() >= 0.999, cosine


def test_cuts_are_after_embeddings_and_each_layer(minilm):
    assert minilm.cuts == ["embeddings"] + [f"layer{i}" for i in range(6)]


def test_hidden_states_and_mask_cross_every_cut(minilm):
    x = minilm.make_input(2, 16)
    h = minilm.run_chain(x, stop=3)
    assert isinstance(h, tuple) and h[0].shape == (2, 16, 384) and torch.equal(h[1], x[1])


def test_padding_does_not_change_the_embedding(minilm):
    short, padded = embed_sentences(minilm, ["edge inference"]), embed_sentences(minilm, ["edge inference", "a much longer sentence " * 5])
    assert torch.allclose(short[0], padded[0], atol=1e-5)
