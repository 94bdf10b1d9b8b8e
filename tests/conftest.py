"""Shared fixtures: real zoo models loaded once per session; data folder checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "profiles"


def imagenet_available() -> bool:
    from aiflow_cli.data.imagenet import imagenet_sample_dir

    return (imagenet_sample_dir() / "labels.csv").is_file()


needs_imagenet = pytest.mark.skipif(not imagenet_available(),
                                    reason="../shared/data/imagenet-sample is absent (set AIFLOW_DATA)")


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
def smollm2_profile(smollm2):
    from aiflow_cli.profiling.measure import profile_model

    return profile_model(smollm2, batch=1, seq_len=32, repeats=3, warmup=1)


@pytest.fixture()
def runner():
    from typer.testing import CliRunner

    return CliRunner()
