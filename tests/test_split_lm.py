"""Causal LM split with a KV cache on each side: greedy decoding through the ONNX pair."""

from __future__ import annotations

import json

import pytest

from aiflow_cli.cli.main import app
from aiflow_cli.export.lm_pair import VERIFY_TOKENS, LMPairRunner
from aiflow_cli.schemas.manifest import load_manifest


@pytest.fixture(scope="module")
def lm_export(tmp_path_factory):
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("lm") / "smollm2"
    result = CliRunner().invoke(app, ["split", "zoo:smollm2-135m", "--cut", "layer2", "--cut", "layer15",
                                      "--cut", "layer28", "--export", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_cuts_after_layers_2_15_28_match_greedy_decoding_token_for_token(lm_export):
    manifest = load_manifest(lm_export)
    assert [p.cut for p in manifest.pairs] == ["layer2", "layer15", "layer28"]
    for pair in manifest.pairs:
        v = pair.verification
        assert pair.kv_cache and v.passed and v.agreement == 1.0
        assert v.count >= VERIFY_TOKENS


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


def test_verify_command_replays_the_lm_pairs(runner, lm_export):
    result = runner.invoke(app, ["split", "verify", str(lm_export), "--json"])
    assert result.exit_code == 0, result.output
    assert all(p["verification"]["passed"] for p in json.loads(result.stdout)["pairs"])
