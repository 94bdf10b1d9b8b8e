"""Causal LM split with a KV cache on each side: greedy decoding through the ONNX pair."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FAST_EXPORT

from aiflow_cli.cli.main import app
from aiflow_cli.export.lm_pair import LMPairRunner, eos_ids
from aiflow_cli.schemas.manifest import load_manifest


@pytest.fixture(scope="module")
def lm_export(tmp_path_factory):
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("lm") / "smollm2"
    result = CliRunner().invoke(app, ["split", "zoo:smollm2-135m", "--cut", "layer2", "--cut", "layer15",
                                      "--cut", "layer28", "--export", str(out), *FAST_EXPORT])
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


@pytest.mark.needs_data("spec-bench")
def test_split_smollm2_generates_over_the_link_token_for_token_with_eight_sessions_at_once(lm_export, smollm2):
    """The layer15 pair served by the embedded engine, behind an emulated 2 MB/s, 20 ms link; eight
    devices generate 32 greedy tokens each for eight Spec-Bench prompts at the same time."""
    import socket
    import threading

    from aiflow_cli.data.specbench import read_prompts
    from aiflow_cli.export.lm_pair import greedy_reference
    from aiflow_cli.serve.device.client import V2Client
    from aiflow_cli.serve.device.lm import LMDevice
    from aiflow_cli.serve.launch import ServerProcess
    from aiflow_cli.serve.link.proxy import LinkShape, start_link_thread

    manifest = load_manifest(lm_export)
    pair = next(p for p in manifest.pairs if p.cut == "layer15")
    prompts = [smollm2.tokenizer(p.text, return_tensors="pt")["input_ids"][:, :48] for p in read_prompts(8)]
    expected = [greedy_reference(smollm2, ids, 32) for ids in prompts]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ServerProcess(lm_export, port, threads=1)
    server.wait_ready()
    proxy, _ = start_link_thread(("127.0.0.1", port), LinkShape(2e6, 10), LinkShape(2e6, 10))
    results: dict[int, object] = {}

    def run(k: int) -> None:
        client = V2Client(f"127.0.0.1:{proxy.port}")
        results[k] = LMDevice(lm_export, manifest, pair, threads=1).generate(
            client, prompts[k][0].tolist(), 32, eos=eos_ids(smollm2))
        client.close()

    try:
        threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    finally:
        proxy.stop()
        server.stop()
    assert sorted(results) == list(range(8))
    for k in range(8):
        assert results[k].tokens == expected[k], k
        assert results[k].round_trips == len(expected[k]) and results[k].resent_prefixes == 0


def test_a_server_that_lost_the_session_gets_the_prefix_again_and_nothing_is_lost(lm_export, smollm2):
    """The server evicts sessions after 0.3 s idle; the device pauses mid-generation, gets a 409,
    resends its prefix and the output is unchanged."""
    import socket
    import time

    from aiflow_cli.export.lm_pair import greedy_reference
    from aiflow_cli.serve.device.client import V2Client
    from aiflow_cli.serve.device.lm import LMDevice
    from aiflow_cli.serve.launch import ServerProcess

    manifest = load_manifest(lm_export)
    pair = next(p for p in manifest.pairs if p.cut == "layer2")
    ids = smollm2.tokenizer("The quickest way to split a model across a link is", return_tensors="pt")["input_ids"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ServerProcess(lm_export, port, threads=1, idle_seconds=0.3)
    server.wait_ready()
    client = V2Client(f"127.0.0.1:{port}")
    original, paused = client.call, []

    def slow_call(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - a device that dawdles once, mid-generation
        if kwargs.get("parameters", {}).get("position", 0) > ids.shape[1] + 4 and not paused:
            paused.append(True)
            time.sleep(0.6)
        return original(*args, **kwargs)

    client.call = slow_call
    try:
        gen = LMDevice(lm_export, manifest, pair, threads=1).generate(client, ids[0].tolist(), 10, eos=eos_ids(smollm2))
    finally:
        server.stop()
    assert gen.resent_prefixes >= 1
    assert gen.tokens == greedy_reference(smollm2, ids, 10)


def test_eight_concurrent_retries_of_one_step_leave_the_cache_as_one_request_would(lm_export, smollm2):
    """A device whose step timed out resends it under the same position; eight copies arriving at once
    are applied one at a time, each cropping back first: every answer holds position p + 1."""
    import socket
    import threading

    import numpy as np

    from aiflow_cli.errors import PeerError
    from aiflow_cli.serve.device.client import V2Client
    from aiflow_cli.serve.device.lm import LMDevice
    from aiflow_cli.serve.launch import ServerProcess
    from aiflow_cli.serve.wire import frame

    manifest = load_manifest(lm_export)
    pair = next(p for p in manifest.pairs if p.cut == "layer2")
    device = LMDevice(lm_export, manifest, pair, threads=1)
    ids = smollm2.tokenizer("Retries must be idempotent", return_tensors="pt")["input_ids"][0].tolist()

    def framed(hidden: np.ndarray) -> dict[str, np.ndarray]:
        return {device.hidden_name: np.frombuffer(frame(device.codec.pack(np.ascontiguousarray(hidden))), np.uint8)}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ServerProcess(lm_export, port, threads=1)
    server.wait_ready()
    answers: list[int] = []
    try:
        client = V2Client(f"127.0.0.1:{port}")
        hidden, past = device._hidden(np.array([ids]), device._empty())
        first = client.call(device.model, framed(hidden), ["next_token"], "r-0", sequence_id="r", sequence_start=True,
                            parameters={"position": 0})
        step, _ = device._hidden(first.as_numpy("next_token").reshape(1, 1), past)

        def retry() -> None:
            mine = V2Client(f"127.0.0.1:{port}")
            result = mine.call(device.model, framed(step), ["next_token"], "r-1", sequence_id="r",
                               parameters={"position": len(ids)})
            answers.append(int(result.get_response()["parameters"]["position"]))
            mine.close()

        threads = [threading.Thread(target=retry) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        refused = []
        for bad in (np.concatenate([step, step]), step[:, :0]):  # two sequences in one session; no token at all
            with pytest.raises(PeerError) as error:
                client.call(device.model, framed(bad), ["next_token"], "r-2", sequence_id="r",
                            parameters={"position": len(ids) + 1})
            refused.append(error.value.status)
    finally:
        server.stop()
    assert answers == [len(ids) + 1] * 8
    assert refused == [400, 400]
