"""Early exits without a bottleneck: calibrated thresholds keep the drop within --max-drop."""

from __future__ import annotations

import json

import pytest

from aiflow_cli.cli.main import app
from conftest import needs_imagenet


def _wikitext_available() -> bool:
    from aiflow_cli.data.text import wikitext_path

    return wikitext_path("valid").is_file() and wikitext_path("test").is_file()


@pytest.mark.skipif(not _wikitext_available(), reason="../shared/data/wikitext-2 is absent")
def test_lm_exit_through_the_shared_head_answers_easy_tokens_within_the_drop(smollm2):
    from aiflow_cli.split.bottleneck.lm_exits import lm_exit_points

    reference, tokens, (point,) = lm_exit_points(smollm2, ["layer25"], 1.0, train_tokens=2048, eval_tokens=2048)
    assert tokens == 2048 and 0.2 < reference < 0.6  # next-token top-1 on WikiText-2 test
    assert point.drop <= 1.0 and point.agreement >= 0.98
    assert point.exit_rate > 0.05  # five layers early, a real share of tokens is easy
    assert 0 < point.compute_saved < point.exit_rate


@needs_imagenet
def test_image_exits_alone_print_json_with_rate_and_compute_saved(runner, tmp_path):
    out = tmp_path / "exits.json"
    result = runner.invoke(app, ["split", "zoo:efficientnet-lite0", "--exit", "block15", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    (ex,) = report["exits"]
    assert report["points"] == [] and ex["cut"] == "block15" and ex["drop"] <= 1.0
    assert {"exit_rate", "compute_saved", "threshold"} <= set(ex)


def test_exits_alone_do_not_export(runner, tmp_path):
    result = runner.invoke(app, ["split", "zoo:efficientnet-lite0", "--exit", "block15", "--export",
                                 str(tmp_path / "pair")])
    assert result.exit_code == 2 and "--bottleneck" in result.stderr
    assert not (tmp_path / "pair").exists()
