"""zoo:efficientnet-lite0: real ImageNet weights, cut points, and what profile measures."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import needs_imagenet

from aiflow_cli.cli.main import app


def test_has_a_cut_after_the_stem_each_block_and_before_the_head(efficientnet):
    assert efficientnet.cuts == ["stem"] + [f"block{i}" for i in range(16)]


def test_segment_chain_equals_the_unsplit_model(efficientnet):
    x = efficientnet.make_input(2, None)
    with torch.no_grad():
        assert torch.equal(efficientnet.run_chain(x), efficientnet.whole(x))


def test_profile_counts_match_the_published_model(efficientnet_profile):
    p = efficientnet_profile
    assert len(p.cuts) >= 10
    assert p.total.macs == pytest.approx(0.385e9, rel=0.03)
    assert p.total.params == pytest.approx(4.65e6, rel=0.01)
    assert sum(s.params for s in p.segments) == p.total.params
    # bytes crossing the cut after block 3: (1, 40, 28, 28) fp32
    assert p.cut_bytes()["block3"] == 40 * 28 * 28 * 4


@pytest.mark.needs_data("imagenet-sample", "imagenet-val")
def test_top1_on_the_test_split_is_at_least_70_percent(efficientnet):
    """The unsplit model's logits on every photo (cached once, shared with the bottleneck tests)."""
    from aiflow_cli.split.bottleneck.features import cut_features

    feats = cut_features(efficientnet, None)
    assert len(feats.test) == 470
    assert float(feats.test.reference_correct.float().mean()) >= 0.70


@needs_imagenet
def test_jpeg_upload_size_is_the_median_sample_photo(efficientnet_profile):
    assert 10_000 < efficientnet_profile.input_bytes.jpeg_q90 < 30_000


def test_profile_command_writes_json_and_plot(runner, tmp_path):
    out, plot = tmp_path / "p.json", tmp_path / "p.png"
    result = runner.invoke(app, ["profile", "zoo:efficientnet-lite0", "--repeats", "3", "--warmup", "1",
                                 "--out", str(out), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["schema_version"] == "aiflow.profile/3"
    assert len(data["cuts"]) == 17 and len(data["segments"]) == 18
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "sum of segment medians" in result.output


def test_onnxruntime_runtime_profiles_exported_segments(runner):
    result = runner.invoke(app, ["profile", "zoo:efficientnet-lite0", "--runtime", "onnxruntime", "--repeats", "3",
                                 "--warmup", "1", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["settings"]["runtime"] == "onnxruntime"
    assert data["total"]["macs"] == pytest.approx(0.385e9, rel=0.03)
