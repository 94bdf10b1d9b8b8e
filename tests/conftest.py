"""Shared fixtures: real zoo models loaded once per session; data folder checks.

A test that reads ``../shared/data`` (or ``$AIFLOW_DATA``) says so with
``@pytest.mark.needs_data("imagenet-sample", ...)``. When a named folder is missing the test
is skipped with the path in the reason, except under CI (``CI`` set), where a missing data
folder is a failure: CI must not pass by skipping the claims.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "profiles"
# Pairs that tests export for other reasons (serving, trust boundaries, verification) use the
# TorchScript exporter: 10-20x faster here, and the suite's budget is minutes. The dynamo exporter,
# aiflow's default, is pinned by tests/test_exporters.py.
FAST_EXPORT = ["--exporter", "torchscript"]


DATA_FILES = {"imagenet-sample": "imagenet-sample/labels.csv", "imagenet-val": "imagenet-val/labels.csv",
              "wikitext-2": "wikitext-2/test.txt", "spec-bench": "spec-bench/question.jsonl"}


def missing_data(names: tuple[str, ...]) -> list[Path]:
    from aiflow_cli.data.imagenet import default_data_root

    root = default_data_root()
    return [root / DATA_FILES.get(n, n) for n in names if not (root / DATA_FILES.get(n, n)).exists()]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under CI every data folder must be there: fail at once, naming what is missing."""
    missing = missing_data(tuple(DATA_FILES))
    if os.environ.get("CI") and missing:
        pytest.exit("data missing: " + ", ".join(map(str, missing)) + " (CI runs every claim on the real data; "
                    "put ../shared/data beside the checkout or set AIFLOW_DATA)", returncode=1)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs_data"):
        missing = missing_data(tuple(mark.args))
        if missing:
            reason = "data missing: " + ", ".join(map(str, missing)) + " (set AIFLOW_DATA)"
            if os.environ.get("CI"):
                pytest.fail(f"{reason}; CI runs every claim on the real data", pytrace=False)
            pytest.skip(reason)


needs_imagenet = pytest.mark.needs_data("imagenet-sample")


DRAFT_SHORT_RECIPE = ("name: draft-short\nmodel: zoo:smollm2-135m\nstages:\n"
                      "  - kind: prune\n    method: depth\n    keep_fraction: 0.3334\n"
                      "    calibration_samples: 4\n    calibration_tokens: 64\n"
                      "  - kind: distill\n    steps: 6\n    batch_size: 2\n    seq_len: 64\n"
                      "    learning_rate: 2.0e-4\n"
                      "  - kind: evaluate\n    latency_repeats: 5\n    eval_samples: 512\n")


@pytest.fixture(scope="session")
def smollm2_draft(tmp_path_factory):
    """The shipped draft recipe, shortened (10 of 30 layers, 6 distillation steps), run once:
    (report, folder). The compress test checks the report; the speculative tests draft with it."""
    from aiflow_cli.compress.pipeline import run_compress

    root = tmp_path_factory.mktemp("draft")
    recipe = root / "recipe.yaml"
    recipe.write_text(DRAFT_SHORT_RECIPE)
    return run_compress(None, recipe, root / "draft"), root / "draft"


@pytest.fixture(scope="session")
def efficientnet():
    from aiflow_cli.models import load_model

    return load_model("zoo:efficientnet-lite0")


@pytest.fixture(scope="session")
def minilm():
    from aiflow_cli.models import load_model

    return load_model("zoo:minilm-l6")


@pytest.fixture(scope="session")
def smollm2():
    from aiflow_cli.models import load_model

    return load_model("zoo:smollm2-135m")


@pytest.fixture(scope="session")
def efficientnet_profile(efficientnet):
    from aiflow_cli.profiling.measure import profile_model

    # One intra-op thread: CI shares two cores with other jobs, and a two-thread op stalls whenever
    # its second thread is descheduled, which skews short segments more than the whole model.
    return profile_model(efficientnet, batch=1, repeats=15, warmup=3, threads=1)


@pytest.fixture(scope="session")
def host_profile_file(efficientnet_profile, tmp_path_factory):
    """This machine's EfficientNet-Lite0 profile as a file (what --profile takes)."""
    path = tmp_path_factory.mktemp("profile") / "effnet.json"
    path.write_text(efficientnet_profile.model_dump_json())
    return path


@pytest.fixture(scope="session")
def smollm2_profile(smollm2):
    from aiflow_cli.profiling.measure import profile_model

    return profile_model(smollm2, batch=1, seq_len=32, repeats=3, warmup=1)


@pytest.fixture()
def runner():
    from typer.testing import CliRunner

    return CliRunner()
