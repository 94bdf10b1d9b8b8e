"""Causal LM split with a KV cache on each side: greedy decoding through the ONNX pair."""

from __future__ import annotations

import json

import pytest
import torch

from aiflow_cli.cli.main import app
from aiflow_cli.export.lm_pair import LMPairRunner, eos_ids
from aiflow_cli.schemas.manifest import load_manifest


@pytest.fixture(scope="module")
def lm_export(tmp_path_factory):
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("lm") / "smollm2"
    result = CliRunner().invoke(app, ["split", "zoo:smollm2-135m", "--cut", "layer2", "--cut", "layer15",
                                      "--cut", "layer28", "--export", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_cuts_after_layers_2_15_28_match_greedy_decoding_token_for_token(lm_export, smollm2):
    """Run here, on a prompt the exporter's own check did not use."""
    manifest = load_manifest(lm_export)
    assert [p.cut for p in manifest.pairs] == ["layer2", "layer15", "layer28"]
    hf = smollm2.extras["hf_model"]
    for prompt in ("Split inference keeps the first layers on the phone and", "def fibonacci(n):"):
        ids = smollm2.tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():  # transformers' own greedy decoding, stopping where it stops
            ref = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False,
                              pad_token_id=smollm2.tokenizer.eos_token_id)[0, ids.shape[1]:].tolist()
        for pair in manifest.pairs:
            assert pair.kv_cache
            tokens, _, _ = LMPairRunner(lm_export, pair).generate(ids.numpy(), 24, eos=eos_ids(smollm2))
            assert tokens == ref, (pair.cut, prompt)


def test_each_side_holds_only_its_own_layers_cache(lm_export):
    pair = load_manifest(lm_export).pairs[0]  # layer2: layers 0-2 on the device
    dev_past = [d.name for d in pair.device.inputs if d.name.startswith("past_key")]
    srv_past = [d.name for d in pair.server.inputs if d.name.startswith("past_key")]
    assert dev_past == ["past_key_0", "past_key_1", "past_key_2"]
    assert srv_past == [f"past_key_{i}" for i in range(3, 30)]
    assert [d.name for d in pair.crossing] == ["hidden_states"]


def test_only_one_hidden_state_per_token_crosses_after_the_prompt(lm_export, smollm2):
    pair = load_manifest(lm_export).pairs[1]
    ids = smollm2.tokenizer("The capital of France is", return_tensors="np")["input_ids"]
    tokens, _, sent = LMPairRunner(lm_export, pair).generate(ids, 8)
    hidden = smollm2.extras["config"].hidden_size
    assert sent == (ids.shape[1] + len(tokens) - 1) * hidden * 4
    assert "Paris" in smollm2.tokenizer.decode(tokens)


def test_verify_replays_the_lm_pair_and_catches_a_server_that_computes_something_else(runner, lm_export, tmp_path):
    """The server half of layer2 returns negated logits, and the manifest's hashes are updated to
    match: only replaying greedy decoding can tell."""
    import shutil

    from tamper import negate_output, rehash

    copy = tmp_path / "copy"
    shutil.copytree(lm_export, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["pairs"] = manifest["pairs"][:1]  # layer2 only, to keep the replay short
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["split", "verify", str(copy)])
    assert result.exit_code == 0, result.output
    negate_output(copy / manifest["pairs"][0]["server"]["file"], "logits")
    rehash(copy)
    result = runner.invoke(app, ["split", "verify", str(copy)])
    assert result.exit_code == 3, result.output
    assert "layer2" in result.stderr and "do not reproduce" in result.stderr
