"""aiflow compress on the real zoo models (short variants of the shipped recipes)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from conftest import needs_imagenet

from aiflow_cli.cli.main import app
from aiflow_cli.compress.distill import kd_loss
from aiflow_cli.compress.pipeline import run_compress

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_kd_loss_is_zero_for_identical_logits_and_positive_otherwise():
    t = torch.randn(4, 10)
    assert kd_loss(t, t, 2.0).abs() < 1e-6
    assert kd_loss(torch.randn(4, 10), t, 2.0) > 0


def test_magnitude_pruning_reaches_the_asked_sparsity():
    from aiflow_cli.compress.prune import prune_magnitude
    from aiflow_cli.schemas.recipe import PruneMagnitude

    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    figures = prune_magnitude(net, PruneMagnitude(kind="prune", method="magnitude", sparsity=0.5))
    assert figures["weight_sparsity"] == pytest.approx(0.5, abs=0.01)


@pytest.fixture(scope="module")
def effnet_int8(tmp_path_factory):
    out = tmp_path_factory.mktemp("compress") / "effnet-int8"
    recipe = _recipe(out.parent, "name: effnet-int8-short\nmodel: zoo:efficientnet-lite0\nstages:\n"
                                 "  - kind: quantize\n    method: static\n    calibration_samples: 32\n"
                                 "  - kind: evaluate\n    latency_repeats: 10\n")
    result = __import__("typer.testing", fromlist=["CliRunner"]).CliRunner().invoke(
        app, ["compress", "--recipe", str(recipe), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "before" in result.output and "after" in result.output
    return out


@needs_imagenet
def test_static_int8_keeps_top1_and_shrinks_the_file(effnet_int8):
    report = json.loads((effnet_int8 / "report.json").read_text())
    before, after = report["before"], report["after"]
    assert after["size_bytes"] <= 0.3 * before["size_bytes"]
    assert before["metric"]["value"] - after["metric"]["value"] <= 0.015
    assert before["metric"]["extra"]["images"] == 200  # the whole evaluation split
    assert report["stages"][0]["figures"]["calibration_inputs"] == 32
    assert {"size_bytes", "params", "latency_ms", "metric"} <= set(before)


@needs_imagenet
def test_compressed_dir_is_a_model_source_for_profile_and_split(runner, effnet_int8, tmp_path):
    result = runner.invoke(app, ["profile", str(effnet_int8), "--repeats", "2", "--warmup", "0", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"]["task"] == "image-classification" and len(data["cuts"]) >= 10
    cut = data["cuts"][len(data["cuts"]) // 2]
    result = runner.invoke(app, ["split", str(effnet_int8), "--cut", cut, "--export", str(tmp_path / "pair"),
                                 "--no-triton", "--verify-count", "10"])
    assert result.exit_code == 0, result.output


@pytest.mark.needs_data("wikitext-2")
def test_dynamic_int8_minilm_keeps_embeddings(tmp_path):
    recipe = _recipe(tmp_path, "name: minilm-short\nmodel: zoo:minilm-l6\nstages:\n"
                               "  - kind: quantize\n    method: dynamic\n    per_channel: true\n"
                               "  - kind: evaluate\n    latency_repeats: 10\n    eval_samples: 64\n")
    report = run_compress(None, recipe, tmp_path / "out")
    assert report.after.metric.value >= 0.98
    # "before" is the fp32 ONNX baseline measured against the torch model, not a constant 1.0
    assert report.before.metric.extra["sentences"] == 64 and report.before.metric.extra["min_cosine"] > 0.9999
    assert report.after.size_bytes < 0.35 * report.before.size_bytes
    figures = report.stages[0].figures  # optimum's configs, as the report records them
    assert "Attention" in figures["fused_ops"] and figures["optimization"] == "O2"
    assert figures["quantization"] in ("avx512_vnni", "avx512", "avx2", "arm64") and "channel-wise: True" in \
        figures["optimum_config"]
    int8_ops = {n.op_type for n in onnx.load(str(tmp_path / "out" / "model.onnx")).graph.node}
    assert {"QAttention", "MatMulInteger"} <= int8_ops  # ORTQuantizer's int8 kernels, fused attention included


def test_the_older_optimize_spelling_still_reads_as_an_optimum_level():
    from aiflow_cli.schemas.recipe import QuantizeDynamic

    assert QuantizeDynamic(kind="quantize", method="dynamic", optimize=True).optimization == "O2"
    assert QuantizeDynamic(kind="quantize", method="dynamic", optimize=False).optimization == "none"
    with pytest.raises(ValueError, match="not both"):
        QuantizeDynamic(kind="quantize", method="dynamic", optimize=True, optimization="O1")
    with pytest.raises(ValueError, match="unknown OptimizationConfig"):
        QuantizeDynamic(kind="quantize", method="dynamic", optimization_options={"fuse_everything": True})


@pytest.mark.needs_data("wikitext-2")
def test_depth_pruned_draft_short_recipe_reports_agreement_before_and_after(smollm2_draft):
    report, folder = smollm2_draft
    prune_figures, distill_figures = report.stages[0].figures, report.stages[1].figures
    assert prune_figures["layers_after"] == 10 and len(prune_figures["kept_layers"]) == 10
    assert distill_figures["agreement_after"] > distill_figures["agreement_before"]  # distillation recovers agreement
    assert "next_token_agreement" in report.after.metric.extra
    assert "dequantised" in report.before.weights  # the baseline is a dequantised GGUF, and the report says so
    from aiflow_cli.models import load_model

    draft = load_model(str(folder))
    assert [c for c in draft.cuts if c.startswith("layer")] == [f"layer{i}" for i in range(10)]


def test_interrupted_run_leaves_no_directory(tmp_path, monkeypatch):
    import aiflow_cli.compress.quantize as q

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(q, "quantize_dynamic_stage", interrupted)
    recipe = _recipe(tmp_path, "name: x\nmodel: zoo:minilm-l6\nstages:\n  - kind: quantize\n    method: dynamic\n")
    with pytest.raises(KeyboardInterrupt):
        run_compress(None, recipe, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]


def test_non_empty_out_is_refused_without_force(runner, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine").write_text("x")
    result = runner.invoke(app, ["compress", "zoo:minilm-l6", "--recipe", str(RECIPES / "minilm-l6-int8-dynamic.yaml"),
                                 "--out", str(out)])
    assert result.exit_code == 2 and "not empty" in result.stderr


@pytest.mark.needs_data("wikitext-2")
def test_a_compressed_lm_is_judged_on_decode_with_a_kv_cache_that_matches_its_own_graph(smollm2_draft):
    """The report times a 64-token prefill and 64 one-token decode steps through model_with_past.onnx,
    before and after; that cached graph decodes the same tokens as model.onnx recomputing everything."""
    import numpy as np

    from aiflow_cli.models.optimum_export import graph_decls
    from aiflow_cli.models.speculative import KVSession, decode_alone
    from aiflow_cli.ort import ort_session

    report, folder = smollm2_draft
    d = report.decode
    assert d is not None and d["notes"] == "float"  # depth prune + distil: nothing quantised
    assert d["after_decode_ms_per_token"] < d["before_decode_ms_per_token"]  # 10 of 30 layers
    assert d["after_decode_ms_per_token"] < d["after_prefill_ms"]  # one token costs less than 64
    compressed = json.loads((folder / "compressed.json").read_text())
    assert compressed["files"]["onnx_with_past"] == "model_with_past.onnx"
    decls, _ = graph_decls(folder / "model_with_past.onnx")  # optimum's layout: past_key_values.N.key/value
    assert [d.name for d in decls][:4] == ["input_ids", "attention_mask", "position_ids", "past_key_values.0.key"]
    assert len(decls) == 3 + 2 * 10  # the draft's 10 layers
    cached = decode_alone(KVSession.open(folder / "model_with_past.onnx", decls), [1, 504, 3458, 314], 8)
    full = ort_session(folder / "model.onnx")
    ids = [1, 504, 3458, 314]
    for _ in range(8):
        ids.append(int(full.run(None, {"input_ids": np.asarray([ids], dtype=np.int64)})[0][0, -1].argmax()))
    assert cached == ids[4:]
