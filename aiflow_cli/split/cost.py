"""The split cost model (Neurosurgeon-style, per request).

For a cut ``c`` between device segments ``0..c`` and server segments ``c+1..``::

    total(c) = device(0..c) + encode(c) + bytes(c) / uplink + RTT
             + server(c+1..) + decode(c) + result_bytes / downlink

    device(0..c) = sum of the device's per-segment compute + one call overhead
    server(c+1..) = sum of the server's per-segment compute + one call overhead

Each side runs its segments as one call (one ONNX session), so the per-call overhead a profile
measures (runtime call, thread-pool wake-up, fusions lost at a boundary) is charged once per side,
not once per segment.

The two extremes are always candidates: ``device-only`` (no link at all) and ``server-only``
(upload the raw input as the app would: JPEG q90 for images, token ids for text).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from aiflow_cli.schemas.plan import Candidate, PlanRow

__all__ = ["SideCost", "CostInputs", "Link", "predict", "candidates", "best_candidate", "plan_table", "DEVICE_ONLY", "SERVER_ONLY",
           "PLAN_MIN_RATE", "PLAN_MAX_RATE"]

DEVICE_ONLY = "device-only"
SERVER_ONLY = "server-only"
PLAN_MIN_RATE = 1e3  # bytes/s; the plan table covers 1 KB/s .. 10 GB/s
PLAN_MAX_RATE = 1e10


@dataclass(frozen=True)
class Link:
    name: str
    up_rate: float  # bytes/s, device -> server
    down_rate: float  # bytes/s, server -> device
    rtt_ms: float


@dataclass(frozen=True)
class SideCost:
    """One machine's cost of running segments: compute per segment, plus one overhead per call."""

    segment_ms: list[float]  # len(cuts) + 1
    call_ms: float = 0.0

    def span_ms(self, first: int, stop: int) -> float:
        """Segments ``first .. stop-1`` run as one call (nothing to run: 0)."""
        return sum(self.segment_ms[first:stop]) + self.call_ms if first < min(stop, len(self.segment_ms)) else 0.0


@dataclass(frozen=True)
class CostInputs:
    cuts: list[str]
    device: SideCost
    server: SideCost
    cut_bytes: list[int]  # bytes on the wire at each cut (after the codec)
    encode_ms: list[float]
    decode_ms: list[float]
    input_upload_bytes: int
    result_bytes: int


def _r(x: float) -> float:
    return round(x, 4)


def predict(cut: str, device_ms: float, encode_ms: float, nbytes: int, server_ms: float, decode_ms: float,
            result_bytes: int, link: Link) -> Candidate:
    """One request over ``link``, component by component (the formula in the module docstring)."""
    transfer = nbytes / link.up_rate * 1e3 + result_bytes / link.down_rate * 1e3
    rtt = link.rtt_ms if nbytes or server_ms else 0.0  # device-only never touches the link
    total = device_ms + encode_ms + transfer + rtt + server_ms + decode_ms
    return Candidate(cut=cut, device_ms=_r(device_ms), encode_ms=_r(encode_ms), transfer_ms=_r(transfer),
                     rtt_ms=rtt, server_ms=_r(server_ms), decode_ms=_r(decode_ms), total_ms=_r(total), bytes=nbytes)


def candidates(c: CostInputs, link: Link) -> list[Candidate]:
    """Every candidate for this link, fastest first (ties keep device-side order)."""
    n = len(c.cuts) + 1
    out = [predict(DEVICE_ONLY, c.device.span_ms(0, n), 0, 0, 0, 0, 0, link)]
    for i, cut in enumerate(c.cuts):
        out.append(predict(cut, c.device.span_ms(0, i + 1), c.encode_ms[i], c.cut_bytes[i],
                           c.server.span_ms(i + 1, n), c.decode_ms[i], c.result_bytes, link))
    out.append(predict(SERVER_ONLY, 0, 0, c.input_upload_bytes, c.server.span_ms(0, n), 0, c.result_bytes, link))
    order = {cand.cut: i for i, cand in enumerate(out)}
    return sorted(out, key=lambda cand: (cand.total_ms, order[cand.cut]))


def best_candidate(c: CostInputs, link: Link) -> Candidate:
    return candidates(c, link)[0]


def _best_at(c: CostInputs, rate: float, rtt_ms: float) -> str:
    return best_candidate(c, Link("plan", rate, rate, rtt_ms)).cut


def plan_table(c: CostInputs, rtt_ms: float, points: int = 400) -> list[PlanRow]:
    """Best cut per (symmetric) link-rate interval: the rates at which a runtime should switch cuts.

    Scans a log grid, then bisects each change to within 0.1% of the rate.
    """
    grid = [PLAN_MIN_RATE * (PLAN_MAX_RATE / PLAN_MIN_RATE) ** (i / (points - 1)) for i in range(points)]
    rows: list[PlanRow] = []
    start, current = grid[0], _best_at(c, grid[0], rtt_ms)
    for lo, hi in zip(grid, grid[1:]):
        nxt = _best_at(c, hi, rtt_ms)
        if nxt == current:
            continue
        while hi / lo > 1.001:  # bisect in log space
            mid = math.sqrt(lo * hi)
            if _best_at(c, mid, rtt_ms) == current:
                lo = mid
            else:
                hi = mid
        rows.append(PlanRow(min_rate_bytes_per_s=round(start, 1), max_rate_bytes_per_s=round(hi, 1), cut=current))
        start, current = hi, _best_at(c, hi, rtt_ms)
    rows.append(PlanRow(min_rate_bytes_per_s=round(start, 1), max_rate_bytes_per_s=PLAN_MAX_RATE, cut=current))
    return rows
