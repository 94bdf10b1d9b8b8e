"""aiflow split on the real zoo models: plans, exports, verification, and bad input."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import FAST_EXPORT, PROFILES, needs_imagenet

from aiflow_cli.cli.main import app
from aiflow_cli.codecs import make_codec
from aiflow_cli.errors import AiflowError, InputError
from aiflow_cli.export.api import export_split

JETSON = PROFILES / "devices" / "jetson-orin-nano.yaml"
A100 = PROFILES / "servers" / "a100-edge.yaml"


@pytest.fixture(scope="session")
def effnet_export(efficientnet, tmp_path_factory):
    """One fp32 pair at block3 (with Triton), shared by the manifest tests."""
    out = tmp_path_factory.mktemp("exports") / "effnet"
    manifest = export_split(efficientnet, ["block3"], {"block3": make_codec("fp32")}, out, verify_count=20,
                            exporter="torchscript")
    return out, manifest


def test_projected_plan_picks_the_cost_model_minimum_for_each_link(runner, host_profile_file, tmp_path):
    plot = tmp_path / "split.png"
    result = runner.invoke(app, ["split", "zoo:efficientnet-lite0", "--device", str(JETSON), "--server", str(A100),
                                 "--bandwidth", "0.5MB/s,1MB/s,2MB/s", "--rtt", "20ms", "--profile",
                                 str(host_profile_file), "--json", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)["plan"]
    assert [lp["rate_bytes_per_s"] for lp in plan["links"]] == [5e5, 1e6, 2e6]
    for lp in plan["links"]:
        totals = {c["cut"]: c["total_ms"] for c in lp["candidates"]}
        assert len(totals) == 17 + 2
        assert totals[lp["best_cut"]] == min(totals.values())
        for c in lp["candidates"]:
            parts = c["device_ms"] + c["encode_ms"] + c["transfer_ms"] + c["rtt_ms"] + c["server_ms"] + c["decode_ms"]
            assert c["total_ms"] == pytest.approx(parts, abs=1e-3)
    assert plan["device"]["source"] == "projected" and plan["server"]["source"] == "projected"
    assert plan["plan_table"] and plan["plan_table"][0]["min_rate_bytes_per_s"] == 1e3
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_plan_table_is_printed(runner, host_profile_file):
    result = runner.invoke(app, ["split", "zoo:efficientnet-lite0", "--device", str(JETSON), "--server", str(A100),
                                 "--bandwidth", "0.5MB/s,1MB/s,2MB/s", "--rtt", "20ms", "--profile", str(host_profile_file)])
    assert result.exit_code == 0, result.output
    assert "plan table" in result.output and "best cut per link" in result.output


def test_a_measured_profile_of_another_runtime_than_the_pairs_is_refused_unless_forced(runner, host_profile_file):
    """The fixture's profile timed PyTorch eager; exported pairs run in onnxruntime."""
    args = ["split", "zoo:efficientnet-lite0", "--device", str(host_profile_file), "--server", str(host_profile_file),
            "--link", str(PROFILES / "links" / "wifi6.yaml"), "--json"]
    refused = runner.invoke(app, args)
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.exit_code == 2 and len(lines) == 1, refused.output
    assert "timed with torch" in lines[0] and "--runtime onnxruntime" in lines[0] and "--force" in lines[0]
    result = runner.invoke(app, [*args, "--force"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)["plan"]
    assert plan["device"]["source"] == "measured"


def _run_pair(root, pair, x):  # noqa: ANN001, ANN202 - device.onnx then server.onnx, here, in onnxruntime
    import numpy as np

    from aiflow_cli.ort import ort_session
    from aiflow_cli.tensors import tensors_of

    device, server = ort_session(root / pair.device.file), ort_session(root / pair.server.file)
    feeds = {d.name: t.numpy() for d, t in zip(pair.device.inputs, tensors_of(x))}
    wire = device.run([d.name for d in pair.crossing], feeds)
    return np.asarray(server.run(None, {d.name: w for d, w in zip(pair.server.inputs, wire)})[0])


@needs_imagenet
def test_every_efficientnet_cut_exports_a_pair_that_runs_like_the_unsplit_model(efficientnet, tmp_path):
    import torch

    from aiflow_cli.data.imagenet import load_batch, read_labels

    codecs = {c: make_codec("fp32") for c in efficientnet.cuts}
    out = tmp_path / "all"
    manifest = export_split(efficientnet, efficientnet.cuts, codecs, out, triton=False, verify_count=10,
                            exporter="torchscript")
    assert [p.cut for p in manifest.pairs] == efficientnet.cuts
    images, _ = load_batch(read_labels(split="test")[:8])
    with torch.no_grad():
        expected = efficientnet.whole(images).numpy()
    for p in manifest.pairs:
        got = _run_pair(out, p, images)
        assert abs(got - expected).max() <= 1e-4 * abs(expected).max(), p.cut
        assert (got.argmax(-1) == expected.argmax(-1)).all(), p.cut


def test_every_minilm_cut_exports_a_pair_that_embeds_like_the_unsplit_model(minilm, tmp_path):
    import numpy as np
    import torch

    codecs = {c: make_codec("fp32") for c in minilm.cuts}
    out = tmp_path / "all"
    manifest = export_split(minilm, minilm.cuts, codecs, out, triton=False, verify_count=4, exporter="torchscript")
    enc = minilm.tokenizer(["A device and a server share one model.", "Bytes cross the link."], padding=True,
                           return_tensors="pt")
    x = (enc["input_ids"], enc["attention_mask"])
    with torch.no_grad():
        expected = minilm.whole(x).numpy()
    for p in manifest.pairs:
        assert [d.name for d in p.crossing] == ["hidden_states", "mask"]
        assert p.crossing[0].shape == ["batch", "sequence", 384]
        got = _run_pair(out, p, x)
        cosine = (got * expected).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(expected, axis=-1))
        assert cosine.min() > 0.9999, p.cut


@needs_imagenet
def test_lossy_codec_pair_sends_a_quarter_of_the_bytes_and_keeps_top1(efficientnet, tmp_path):
    import torch

    from aiflow_cli.data.imagenet import load_batch, read_labels
    from aiflow_cli.export.runner import PairRunner
    from aiflow_cli.split.codec_eval import evaluate_codec

    [cc] = evaluate_codec(efficientnet, "int8-channel+zstd", cut_indices=[efficientnet.cut_index("block9")])
    manifest = export_split(efficientnet, ["block9"], {"block9": cc.codec}, tmp_path / "int8", triton=False,
                            verify_count=10, exporter="torchscript")
    pair = manifest.pairs[0]
    assert pair.crossing[0].dtype == "uint8" and pair.codec.name == "int8-channel+zstd"
    images, _ = load_batch(read_labels(split="test")[:40])
    with torch.no_grad():
        expected = efficientnet.whole(images).argmax(-1)
    runner = PairRunner(tmp_path / "int8", pair)
    agree, sent = 0, 0
    for i in range(len(images)):
        outputs, nbytes = runner(images[i:i + 1])
        agree += int(outputs[0].argmax(-1)[0] == expected[i])
        sent += nbytes
    assert agree / len(images) >= 0.9
    assert sent / len(images) < 0.3 * 112 * 14 * 14 * 4  # block9: (1, 112, 14, 14) fp32 is 87.8 KB


def test_manifest_validates_against_the_shipped_schema(effnet_export):
    import jsonschema

    from aiflow_cli.schemas.manifest import SCHEMA_FILE, manifest_json_schema

    out, _ = effnet_export
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema == json.loads(json.dumps(manifest_json_schema())), "regenerate manifest.schema.json"
    jsonschema.validate(json.loads((out / "manifest.json").read_text()), schema)


def test_every_triton_config_parses_back_and_matches_the_manifest(effnet_export):
    """Configs are ModelConfig protobufs in text format: parse each back and check names, dtypes and dims."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    out, manifest = effnet_export
    pair = manifest.pairs[0]
    name = "efficientnet-lite0-server-block3"
    configs = {}
    for folder in sorted((out / "triton").iterdir()):
        configs[folder.name] = text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())
        assert configs[folder.name].name == folder.name
    assert set(configs) == {name, f"{name}-decode", f"{name}-onnx"}

    def decls(tensors):  # noqa: ANN001, ANN202
        return [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in tensors]

    wire = [(d.name, "TYPE_UINT8", [-1]) for d in pair.crossing]
    server_in = [(d.name, "TYPE_FP32", [-1 if isinstance(x, str) else x for x in d.shape]) for d in pair.server.inputs]
    server_out = [(d.name, "TYPE_FP32", [-1 if isinstance(x, str) else x for x in d.shape]) for d in pair.server.outputs]
    assert server_in == [("activation", "TYPE_FP32", [-1, 40, 28, 28])]
    ens, dec, onnx_step = configs[name], configs[f"{name}-decode"], configs[f"{name}-onnx"]
    assert ens.platform == "ensemble" and decls(ens.input) == wire and decls(ens.output) == server_out
    assert dec.backend == "python" and decls(dec.input) == wire
    assert [(n.replace("__decoded", ""), t, d) for n, t, d in decls(dec.output)] == server_in
    assert onnx_step.platform == "onnxruntime_onnx" and decls(onnx_step.input) == server_in
    assert decls(onnx_step.output) == server_out
    steps = ens.ensemble_scheduling.step
    assert [s.model_name for s in steps] == [f"{name}-decode", f"{name}-onnx"]
    assert dict(steps[1].input_map) == {"activation": "activation__decoded"}
    model = out / "triton" / f"{name}-onnx" / "1" / "model.onnx"
    assert model.read_bytes() == (out / pair.server.file).read_bytes()


def test_the_kserve_inference_service_serves_the_triton_repository_and_fits_its_schema(effnet_export):
    import jsonschema
    import yaml

    from aiflow_cli.export.kserve import SCHEMA

    out, _ = effnet_export
    doc = yaml.safe_load((out / "kserve" / "inferenceservice.yaml").read_text())
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    triton = doc["spec"]["predictor"]["triton"]
    assert triton["storageUri"].endswith("/triton") and triton["protocolVersion"] == "v2"
    assert doc["metadata"]["annotations"]["aiflow/models"] == "efficientnet-lite0-server-block3"
    bad = {**doc, "spec": {"predictor": {"triton": {"storageUri": "/not/a/uri"}}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, json.loads(SCHEMA.read_text()))


def test_verify_command_accepts_an_intact_export(runner, effnet_export):
    out, _ = effnet_export
    result = runner.invoke(app, ["split", "verify", str(out), "--verify-count", "10"])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


@pytest.mark.parametrize("side", ["device", "server"])
def test_changing_one_byte_of_an_onnx_file_fails_verification(runner, effnet_export, tmp_path, side):
    out, manifest = effnet_export
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    target = copy / getattr(manifest.pairs[0], side).file
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    result = runner.invoke(app, ["split", "verify", str(copy)])
    assert result.exit_code == 2
    assert "hash mismatch" in result.stderr and target.name in result.stderr


def test_verify_catches_a_pair_that_computes_something_else_behind_matching_hashes(runner, effnet_export, tmp_path):
    from tamper import negate_output, rehash

    out, manifest = effnet_export
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    negate_output(copy / manifest.pairs[0].server.file, "logits")
    rehash(copy)
    result = runner.invoke(app, ["split", "verify", str(copy), "--verify-count", "10"])
    assert result.exit_code == 3, result.output
    assert "block3" in result.stderr and "do not reproduce" in result.stderr


def test_unknown_cut_lists_the_valid_ones(runner, tmp_path):
    result = runner.invoke(app, ["split", "zoo:efficientnet-lite0", "--cut", "block99", "--export", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "unknown cut 'block99'" in result.stderr and "stem, block0" in result.stderr
    assert not (tmp_path / "x").exists()


def test_profile_of_another_model_is_refused(runner, host_profile_file):
    result = runner.invoke(app, ["split", "zoo:minilm-l6", "--device", str(host_profile_file), "--server",
                                 str(host_profile_file), "--bandwidth", "1MB/s"])
    assert result.exit_code == 2
    assert "measured on model 'zoo:efficientnet-lite0'" in result.stderr


def test_non_empty_export_dir_is_refused_without_force(runner, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["split", "zoo:efficientnet-lite0", "--cut", "block3", "--export", str(out)])
    assert result.exit_code == 2 and "not empty" in result.stderr and "--force" in result.stderr
    assert (out / "keep.txt").read_text() == "mine"


def test_force_replaces_a_non_empty_export_dir(runner, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "old.txt").write_text("old")
    result = runner.invoke(app, ["split", "zoo:efficientnet-lite0", "--cut", "block14", "--export", str(out),
                                 "--force", "--no-triton", "--verify-count", "10", *FAST_EXPORT])
    assert result.exit_code == 0, result.output
    assert not (out / "old.txt").exists() and (out / "manifest.json").is_file()


def test_failed_export_leaves_nothing_behind(efficientnet, tmp_path, monkeypatch):
    import aiflow_cli.export.api as api

    real = api.verify_pair

    def failing(*args, **kwargs):
        return real(*args, **kwargs).model_copy(update={"passed": False})

    monkeypatch.setattr(api, "verify_pair", failing)
    with pytest.raises(AiflowError, match="failed verification, nothing written"):
        export_split(efficientnet, ["block3"], {"block3": make_codec("fp32")}, tmp_path / "out", verify_count=4,
                     exporter="torchscript")
    assert list(tmp_path.iterdir()) == []


def test_split_without_link_or_cut_says_what_to_pass(runner):
    result = runner.invoke(app, ["split", "zoo:efficientnet-lite0"])
    assert result.exit_code == 2 and "--device" in result.stderr


def test_device_without_server_is_refused():
    from aiflow_cli.api.split import PlanSettings

    with pytest.raises(InputError, match="go together"):
        PlanSettings(model="zoo:efficientnet-lite0", device=JETSON)
