"""Early exits without a bottleneck: calibrated thresholds keep the drop within --max-drop."""

from __future__ import annotations

import json

import pytest

from aiflow_cli.cli.main import app


@pytest.mark.needs_data("wikitext-2")
def test_lm_exit_through_the_shared_head_answers_easy_tokens_within_the_drop(smollm2):
    from aiflow_cli.split.bottleneck.lm_exits import _layer_macs, lm_exit_points

    run = lm_exit_points(smollm2, ["layer25"], 1.0, train_tokens=2048, eval_tokens=2048)
    (point,) = run.points
    assert run.test_tokens == 2048 and (run.fit_tokens, run.calibration_tokens) == (1536, 512)
    assert 0.2 < run.reference_test.value < 0.6 and run.reference_test.n == 2048  # next-token top-1, WikiText-2 test
    assert point.test.drop.ci95[0] <= 1.0 and point.test.agreement.value >= 0.98
    assert point.exit_rate.value > 0.05  # five layers early, a real share of tokens is easy
    macs = _layer_macs(smollm2)
    skipped = sum(macs[smollm2.cut_index("layer25") + 1:-1]) / sum(macs)
    assert point.compute_saved == pytest.approx(point.exit_rate.value * skipped)


@pytest.mark.needs_data("imagenet-sample", "imagenet-val")
def test_image_exits_alone_print_json_with_rate_and_compute_saved(runner, tmp_path):
    out = tmp_path / "exits.json"
    result = runner.invoke(app, ["split", "exits", "zoo:efficientnet-lite0", "--exit", "block15", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    (ex,) = report["exits"]
    assert report["points"] == [] and ex["cut"] == "block15"
    assert ex["exit_rate"]["n"] == report["data"]["test_inputs"] == 470
    assert ex["test"]["drop"]["ci95"][0] <= 1.0 and ex["calibration_bound"] <= 0.5


def test_exits_alone_do_not_export(runner, tmp_path):
    result = runner.invoke(app, ["split", "exits", "zoo:efficientnet-lite0", "--exit", "block15", "--export",
                                 str(tmp_path / "pair")])
    assert result.exit_code == 2 and "No such option: --export" in result.stderr
    assert not (tmp_path / "pair").exists()
