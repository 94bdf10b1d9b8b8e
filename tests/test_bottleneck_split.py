"""``aiflow split --bottleneck`` on the real EfficientNet-Lite0 and the ImageNet sample.

One short training run (one beta, one epoch) is shared by the claims: the JSON format, real
range coding close to the estimate, an exported pair that reproduces its training graph, and a
tampered weights file that ``split verify`` refuses. The full-length figures are the benchmark's
(benchmarks/bottleneck.py, docs/benchmarks.md).
"""

from __future__ import annotations

import json

import pytest

from aiflow_cli.cli.main import app
from conftest import needs_imagenet

CUT = "block12"


@pytest.fixture(scope="module")
def bottleneck_run(tmp_path_factory):
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("bottleneck")
    export = out / "pair"
    result = CliRunner().invoke(app, ["split", "zoo:efficientnet-lite0", "--bottleneck", "--cut", CUT, "--beta", "1e-4",
                                      "--epochs", "1", "--exit", CUT, "--exit", "block15", "--export", str(export),
                                      "--plot", str(out / "rate.png"), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), export, out


@needs_imagenet
def test_bottleneck_json_has_points_baselines_and_the_reference(bottleneck_run):
    report, _, out = bottleneck_run
    assert report["schema_version"] == "aiflow.bottleneck/1"
    assert 0.7 < report["reference_metric"] <= 1.0 and report["eval_inputs"] == 200
    (point,) = report["points"]
    for key in ("cut", "beta", "bytes_per_input", "estimated_bytes_per_input", "metric", "agreement"):
        assert key in point
    names = {b["name"] for b in report["baselines"]}
    assert {"jpeg-q10", "jpeg-q90", "jpeg-q95", f"fp16@{CUT}", f"int8-zstd@{CUT}", f"uniform-q1.5@{CUT}"} <= names
    jpeg90 = next(b for b in report["baselines"] if b["name"] == "jpeg-q90")
    assert point["bytes_per_input"] * 8 < jpeg90["bytes_per_input"]  # even one epoch sends 8x fewer bytes
    assert point["agreement"] > 0.8
    assert (out / "rate.png").stat().st_size > 10_000


@needs_imagenet
def test_range_coded_bytes_stay_within_3_percent_of_the_estimate(bottleneck_run):
    (point,) = bottleneck_run[0]["points"]
    assert point["bytes_per_input"] - 8 <= point["estimated_bytes_per_input"] * 1.03


@needs_imagenet
def test_calibrated_exits_keep_the_accuracy_drop_within_one_point(bottleneck_run):
    exits = bottleneck_run[0]["exits"]
    assert [e["cut"] for e in exits] == [CUT, "block15"]
    for ex in exits:
        assert ex["drop"] <= 1.0
        assert 0 <= ex["exit_rate"] <= 1 and 0 <= ex["compute_saved"] <= ex["exit_rate"]


@needs_imagenet
def test_device_onnx_carries_the_exit_head_with_its_calibrated_threshold(bottleneck_run):
    """Exits at or before the cut go into device.onnx (block15 would run on the server: left out);
    thresholding its logits on the evaluation images reproduces the reported exit rate."""
    import numpy as np

    from aiflow_cli.data.imagenet import load_batch, read_labels
    from aiflow_cli.export.sessions import ort_session

    report, export, _ = bottleneck_run
    (pair,) = json.loads((export / "manifest.json").read_text())["pairs"]
    (decl,) = pair["exits"]
    assert decl["cut"] == CUT and decl["output"] in [o["name"] for o in pair["device"]["outputs"]]
    session = ort_session(export / pair["device"]["file"])
    records = read_labels(split="eval")
    fired = []
    for i in range(0, len(records), 50):
        images, _ = load_batch(records[i:i + 50])
        (logits,) = session.run([decl["output"]], {pair["device"]["inputs"][0]["name"]: images.numpy()})
        p = np.exp(logits - logits.max(-1, keepdims=True))
        fired.extend((p.max(-1) / p.sum(-1)) >= decl["threshold"])
    reported = next(e for e in report["exits"] if e["cut"] == CUT)["exit_rate"]
    assert abs(np.mean(fired) - reported) <= 0.01


@needs_imagenet
def test_exported_bottleneck_pair_reproduces_its_training_graph(bottleneck_run, runner):
    _, export, _ = bottleneck_run
    manifest = json.loads((export / "manifest.json").read_text())
    (pair,) = manifest["pairs"]
    assert pair["codec"]["name"] == "learned-bottleneck" and pair["crossing"][0]["dtype"] == "int32"
    assert pair["verification"]["agreement"] >= 0.99
    result = runner.invoke(app, ["split", "verify", str(export), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["pairs"][0]["verification"]["agreement"] >= 0.99


@needs_imagenet
def test_verify_refuses_bottleneck_weights_that_do_not_match_the_manifest(bottleneck_run, runner, tmp_path):
    import shutil

    _, export, _ = bottleneck_run
    copy = tmp_path / "copy"
    shutil.copytree(export, copy)
    weights = copy / CUT / "bottleneck.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    result = runner.invoke(app, ["split", "verify", str(copy)])
    assert result.exit_code == 2 and "bottleneck.safetensors" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--cut", CUT, "--beta", "0"], "--beta must be greater than 0"),
    (["--cut", CUT, "--beta", "-1e-4"], "--beta must be greater than 0"),
    (["--cut", CUT, "--beta", "x"], "cannot read 'x'"),
    (["--cut", "nope"], "unknown cut 'nope'"),
])
def test_bad_bottleneck_settings_fail_before_any_work(runner, tmp_path, args, message):
    out, export = tmp_path / "b.json", tmp_path / "pair"
    result = runner.invoke(app, ["split", "zoo:efficientnet-lite0", "--bottleneck", *args, "--out", str(out),
                                 "--export", str(export)])
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1
    assert not out.exists() and not export.exists()


def test_a_cut_without_an_image_activation_is_refused(runner, tmp_path):
    out = tmp_path / "b.json"
    result = runner.invoke(app, ["split", "zoo:minilm-l6", "--bottleneck", "--cut", "layer0", "--out", str(out)])
    assert result.exit_code == 2 and "no bottleneck-capable tensor" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("labels", [None, "file,class_index\n"])
def test_an_empty_data_folder_is_refused(runner, tmp_path, labels):
    data = tmp_path / "data"
    data.mkdir()
    if labels is not None:
        (data / "labels.csv").write_text(labels)
    out, export = tmp_path / "b.json", tmp_path / "pair"
    result = runner.invoke(app, ["split", "zoo:efficientnet-lite0", "--bottleneck", "--cut", CUT, "--data", str(data),
                                 "--out", str(out), "--export", str(export)])
    assert result.exit_code == 2 and str(data) in result.stderr, result.output
    assert not out.exists() and not export.exists()


def test_auto_choice_weighs_exits_and_keeps_device_only_as_a_candidate():
    from aiflow_cli.schemas.bottleneck import ExitPoint, RatePoint
    from aiflow_cli.split.bottleneck.api import _choose
    from aiflow_cli.split.cost import Link

    class Cuts:
        cuts = ["a", "b", "c"]

        def cut_index(self, cut: str) -> int:
            return self.cuts.index(cut)

    def point(cut: str, metric: float, ms: float) -> RatePoint:
        return RatePoint(cut=cut, beta=1e-4, bytes_per_input=1000, estimated_bytes_per_input=990, metric=metric,
                         agreement=0.9, kl=0.05, train_seconds=1, encode_ms=0, decode_ms=0, latency_ms={"l": ms})

    points = [point("b", 0.815, 40.0), point("c", 0.70, 10.0)]  # c is fast but loses 12 points
    exit_a = ExitPoint(cut="a", threshold=0.5, calibration_drop=0, exit_rate=0.5, exit_accuracy=0.9, metric=0.815,
                       drop=0.4, agreement=0.99, compute_saved=0.3)
    link = Link("l", 1e6, 1e6, 20)
    slow_device = [30.0, 30.0, 30.0, 30.0]  # 120 ms on the device alone
    (choice,) = _choose(Cuts(), points, [exit_a], 0.82, 1.0, slow_device, [link])
    assert (choice.cut, choice.exit) == ("b", "a")  # half the inputs stop after 30 ms: 0.5*30 + 0.5*40
    assert choice.expected_latency_ms == pytest.approx(35.0) and choice.drop == pytest.approx(0.5 + 0.4)
    (choice,) = _choose(Cuts(), points, [exit_a], 0.82, 1.0, [1.0] * 4, [link])
    assert choice.cut == "device-only" and choice.beta is None and choice.drop == 0
