"""Adaptive cut switching: the device estimates the link from its own transfers and, request by
request, uses the exported pair the plan's cost model predicts fastest at that estimate.

::

    fixed part    = round trip of a tiny request (health check) through the link: RTT + stack
    rate sample   = (request bytes + answer bytes) / (transfer - fixed part)
    rate estimate = EWMA(samples), alpha 0.5 (reacts within two or three requests)
    pair          = argmin over exported pairs of predict(pair.cost, rate estimate, fixed part)

Only pairs the export holds are candidates (the manifest's plan table also ranks device-only
and server-only, which need no pair), and every pair needs its ``cost`` (export with
``--device``/``--server``).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from aiflow_cli.errors import InputError
from aiflow_cli.serve.device.client import V2Client
from aiflow_cli.serve.device.pairs import DevicePair, RequestRecord
from aiflow_cli.split.cost import Link, predict

__all__ = ["RateEstimator", "AdaptiveDevice", "probe_fixed_ms"]


@dataclass
class RateEstimator:
    alpha: float = 0.5
    estimate: float | None = None
    history: list[float] = field(default_factory=list)

    def update(self, nbytes: int, seconds: float) -> None:
        if nbytes <= 0 or seconds <= 0:
            return
        sample = nbytes / seconds
        self.estimate = sample if self.estimate is None else self.alpha * sample + (1 - self.alpha) * self.estimate
        self.history.append(self.estimate)


def probe_fixed_ms(client: V2Client, count: int = 3) -> float:
    """The smallest round trip of a health check: what every request pays besides its bytes."""
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        client.client.is_server_ready(headers=client.headers)
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times)


class AdaptiveDevice:
    def __init__(self, pairs: dict[str, DevicePair], client: V2Client) -> None:
        if not pairs:
            raise InputError("adaptive switching needs exported pairs")
        missing = [cut for cut, p in pairs.items() if p.pair.cost is None]
        if missing:
            raise InputError(f"pairs at {', '.join(missing)} carry no cost model",
                             "export with --device and --server so the manifest carries each pair's cost")
        self.pairs, self.client = pairs, client
        self.rate = RateEstimator()
        self.fixed_ms = probe_fixed_ms(client)
        self.choices: list[str] = []

    def predicted_ms(self, cut: str, rate: float) -> float:
        c = self.pairs[cut].pair.cost
        return predict(cut, c.device_ms * self.pairs[cut].slowdown, c.encode_ms, c.bytes, c.server_ms, c.decode_ms,
                       c.result_bytes, Link("estimate", rate, rate, self.fixed_ms)).total_ms

    def choose(self) -> str:
        if self.rate.estimate is None:  # nothing measured yet: the pair that sends the fewest bytes
            return min(self.pairs, key=lambda cut: self.pairs[cut].pair.cost.bytes)
        return min(self.pairs, key=lambda cut: self.predicted_ms(cut, self.rate.estimate))

    def request(self, x: object, index: int, label: int | None = None) -> RequestRecord:
        cut = self.choose()
        self.choices.append(cut)
        record = self.pairs[cut].request(self.client, x, index, label)
        if record.status != "failed":
            self.rate.update(record.request_bytes + record.response_bytes,
                             max(record.transfer_ms - self.fixed_ms, 0.5) / 1e3)
        return record


def median(records: list[RequestRecord]) -> float:
    return statistics.median(r.total_ms for r in records if r.status != "failed")
