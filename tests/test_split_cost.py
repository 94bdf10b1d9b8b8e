"""The cost model and the plan table, on numbers small enough to check by hand."""

from __future__ import annotations

import pytest

from aiflow_cli.split.cost import CostInputs, Link, SideCost, candidates, plan_table
from aiflow_cli.split.links import parse_ms, parse_rate


def _inputs() -> CostInputs:
    # 3 segments, 2 cuts. The device is slow, the server fast; cut 'b' sends little.
    return CostInputs(cuts=["a", "b"], device=SideCost([10, 10, 10]), server=SideCost([1, 1, 1]), cut_bytes=[100_000, 1_000],
                      encode_ms=[0, 0], decode_ms=[0, 0], input_upload_bytes=50_000, result_bytes=0)


def test_totals_follow_the_formula():
    cands = {c.cut: c for c in candidates(_inputs(), Link("l", 1e6, 1e6, 20))}
    assert cands["device-only"].total_ms == 30
    assert cands["a"].total_ms == pytest.approx(10 + 100 + 20 + 2)
    assert cands["b"].total_ms == pytest.approx(20 + 1 + 20 + 1)
    assert cands["server-only"].total_ms == pytest.approx(50 + 20 + 3)


def test_candidates_are_ranked_and_include_both_extremes():
    ranked = candidates(_inputs(), Link("l", 1e6, 1e6, 20))
    assert [c.total_ms for c in ranked] == sorted(c.total_ms for c in ranked)
    assert {"device-only", "server-only"} <= {c.cut for c in ranked}


def test_fast_link_prefers_the_server_and_slow_link_the_device():
    assert candidates(_inputs(), Link("fast", 1e10, 1e10, 0))[0].cut == "server-only"
    assert candidates(_inputs(), Link("slow", 1e3, 1e3, 20))[0].cut == "device-only"


def test_plan_table_switches_where_the_totals_cross():
    rows = plan_table(_inputs(), rtt_ms=0)
    assert [r.cut for r in rows] == ["device-only", "b", "server-only"]
    # device-only (30 ms) == b (21 + 1000 B / r): r = 1000 / 9 ms = 111.1 KB/s
    assert rows[0].max_rate_bytes_per_s == pytest.approx(1000 / 0.009, rel=0.002)
    # b == server-only: 21 + 1e6/r ms == 3 + 5e7/r ms  ->  r = 4.9e7/18 per s
    assert rows[1].max_rate_bytes_per_s == pytest.approx(49_000 / 0.018, rel=0.002)
    assert rows[0].max_rate_bytes_per_s == rows[1].min_rate_bytes_per_s


@pytest.mark.parametrize("text,expected", [("0.5MB/s", 5e5), ("2 MB/s", 2e6), ("8Mbit/s", 1e6), ("500KB/s", 5e5)])
def test_rates_parse_bytes_and_bits(text, expected):
    assert parse_rate(text) == pytest.approx(expected)


def test_rtt_parses_ms_and_seconds():
    assert parse_ms("20ms") == 20 and parse_ms("0.02s") == 20


def test_each_side_pays_its_call_overhead_once_whatever_it_runs():
    inputs = CostInputs(cuts=["a", "b"], device=SideCost([10, 10, 10], call_ms=2), server=SideCost([1, 1, 1], call_ms=0.5),
                        cut_bytes=[0, 0], encode_ms=[0, 0], decode_ms=[0, 0], input_upload_bytes=0, result_bytes=0)
    cands = {c.cut: c for c in candidates(inputs, Link("l", 1e6, 1e6, 0))}
    assert cands["device-only"].device_ms == 32 and cands["device-only"].server_ms == 0
    assert (cands["a"].device_ms, cands["a"].server_ms) == (12, 2.5)
    assert (cands["b"].device_ms, cands["b"].server_ms) == (22, 1.5)
    assert cands["server-only"].server_ms == 3.5 and cands["server-only"].device_ms == 0
