"""``aiflow serve-pair bench``: the pairs of an export over emulated links, measured against the plan.

One server process (pinned to its own core, one thread) serves the export; this process is the
device (pinned to another core, one thread) and runs the link proxy. For each link and pair:
warm-up requests, then N requests of real inputs, each timed component by component. The
prediction comes from the manifest's own cost model for the pair (``PairCost``: what the plan
predicted, without a link) and the link's rate and RTT, by the same formula ``aiflow split`` uses.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from aiflow_cli.errors import InputError
from aiflow_cli.schemas.bench import (
    AdaptReport,
    AdaptVariant,
    BenchReport,
    Component,
    PairLinkResult,
    Protocol,
)
from aiflow_cli.serve.device.client import V2Client
from aiflow_cli.serve.device.pairs import (
    DevicePair,
    RequestRecord,
    bench_inputs,
    load_device_pairs,
)
from aiflow_cli.serve.launch import ServerProcess, free_port, pin_to_cores
from aiflow_cli.serve.link.proxy import LinkShape, start_link_thread
from aiflow_cli.split.cost import Link, predict

__all__ = ["BenchLink", "parse_bench_link", "run_bench", "run_adaptive_bench", "TOTAL_LIMIT",
           "COMPONENT_LIMIT", "bench_inputs", "measure_protocol"]

TOTAL_LIMIT = 0.15
COMPONENT_LIMIT = 0.20
ABSOLUTE_FLOOR_MS = 0.5  # a component off by less than this passes whatever its relative error (0.1 ms vs 0.25 ms)
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class BenchLink:
    name: str
    rate: float  # bytes/s, both directions
    rtt_ms: float


def parse_bench_link(text: str) -> BenchLink:
    """``0.5MB/s,20ms`` -> a link of that rate (both directions) and round-trip time."""
    from aiflow_cli.split.links import parse_ms, parse_rate

    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2:
        raise InputError(f"--link '{text}': expected RATE,RTT", "for example --link 0.5MB/s,20ms")
    return BenchLink(f"{parts[0]},{parts[1]}", parse_rate(parts[0]), parse_ms(parts[1]))


def _median(records: list[RequestRecord], field: str) -> float:
    return statistics.median(getattr(r, field) for r in records)


def _component(name: str, measured: float, predicted: float | None) -> Component:
    error = None if predicted is None or measured <= 0 else round((predicted - measured) / measured, 4)
    return Component(name=name, measured_ms=round(measured, 3), predicted_ms=None if predicted is None else round(predicted, 3),
                     error=error)


def measure_protocol(pair: DevicePair, client: V2Client, inputs: list[Any], count: int = 20,
                     server_clock: Callable[[], float] | None = None) -> Protocol:
    """Requests straight to the server (no link): what the protocol and the serving stack add."""
    records = [pair.request(client, inputs[i % len(inputs)], i, server_clock=server_clock) for i in range(count)]
    ok = [r for r in records if r.status == "ok"] or records
    return Protocol(request_bytes=statistics.median(r.request_bytes - r.codec_bytes for r in ok),
                    response_bytes=statistics.median(r.response_bytes for r in ok),
                    stack_ms=round(statistics.median(r.roundtrip_ms - r.server_ms for r in ok), 4))


def _summarise(pair: DevicePair, link: BenchLink, records: list[RequestRecord], protocol: Protocol) -> PairLinkResult:
    """Medians per component against the plan's prediction, with the protocol's own bytes and the
    stack's own time added to the network term (the plan charges codec bytes and RTT only)."""
    from aiflow_cli.stats import share

    ok = [r for r in records if r.status in ("ok", "retried")]
    if not ok:
        raise InputError(f"every request to {pair.model} over {link.name} failed: {records[0].error}")
    cost = pair.pair.cost
    pred = None
    if cost is not None:
        pred = predict(pair.pair.cut, cost.device_ms * pair.slowdown, cost.encode_ms, round(cost.bytes + protocol.request_bytes),
                       cost.server_ms, cost.decode_ms, round(protocol.response_bytes),
                       Link(link.name, link.rate, link.rate, link.rtt_ms + protocol.stack_ms))
    totals = sorted(r.total_ms for r in ok)
    components = [
        _component("device", _median(ok, "device_ms"), pred.device_ms if pred else None),
        _component("encode", _median(ok, "encode_ms"), pred.encode_ms if pred else None),
        _component("network", _median(ok, "transfer_ms"), pred.transfer_ms + pred.rtt_ms if pred else None),
        _component("server", _median(ok, "server_ms"), pred.server_ms + pred.decode_ms if pred else None),
        _component("total", statistics.median(totals), pred.total_ms if pred else None),
    ]
    labelled = [(r.prediction, r.label) for r in ok if r.label is not None]
    return PairLinkResult(
        model=pair.model, cut=pair.pair.cut, codec=pair.pair.codec.name, link=link.name, rate_bytes_per_s=link.rate,
        rtt_ms=link.rtt_ms, requests=len(records), succeeded=sum(r.status == "ok" for r in records),
        retried=sum(r.status == "retried" for r in records), failed=sum(r.status == "failed" for r in records),
        exited=sum(r.status == "exited" for r in records),
        components=components, total_p50_ms=round(float(np.percentile(totals, 50)), 3),
        total_p90_ms=round(float(np.percentile(totals, 90)), 3), total_p99_ms=round(float(np.percentile(totals, 99)), 3),
        codec_bytes=_median(ok, "codec_bytes"),
        protocol_bytes=statistics.median(r.request_bytes - r.codec_bytes for r in ok),
        top1=share([p == y for p, y in labelled]) if labelled else None,
        predictions=[r.prediction if r.prediction is not None else -1 for r in records],
        predicted_for="" if cost is None else (f"device {cost.device_runtime} ({cost.device_source}), "
                                               f"server {cost.server_runtime} ({cost.server_source})"))


def _judge(results: list[PairLinkResult]) -> bool:
    """Every total within 15% and every component within 20% (or within 0.5 ms: sub-millisecond
    parts such as a 0.1 ms zstd call cannot be held to a relative bound by a timer)."""
    for res in results:
        for c in res.components:
            if c.error is None or c.predicted_ms is None:
                return False
            limit = TOTAL_LIMIT if c.name == "total" else COMPONENT_LIMIT
            if abs(c.error) > limit and (c.name == "total" or abs(c.measured_ms - c.predicted_ms) > ABSOLUTE_FLOOR_MS):
                return False
    return bool(results)


def _pin_and_start(directory: Path, engine: str, port: int, cores: tuple[int, int] | None
                   ) -> tuple["ServerProcess", tuple[int, int]]:

    available = sorted(os.sched_getaffinity(0))
    if cores is None:
        cores = (available[0], available[-1]) if len(available) > 1 else (available[0], available[0])
    pin_to_cores([cores[0]])
    return ServerProcess(Path(directory), port or free_port(), engine, [cores[1]]), cores


def _pinning(cores: tuple[int, int], slowdown: float) -> str:
    text = (f"device (this process, 1 thread) on core {cores[0]}, server (1 thread) on core {cores[1]}"
            + (" (the same core: this machine has one)" if cores[0] == cores[1] else ""))
    if slowdown > 1:
        text += f"; device emulated {slowdown:g}x slower than this machine (it waits out the difference)"
    return text


def run_bench(directory: Path, links: list[BenchLink], requests: int = 50, warmup: int = 3, engine: str = "embedded",
              data: Path | None = None, port: int = 0, cores: tuple[int, int] | None = None,
              progress: Progress | None = None, device_slowdown: float = 1.0) -> BenchReport:
    if requests < 1 or warmup < 0:
        raise InputError("--requests must be at least 1 and --warmup 0 or more")
    if not links:
        raise InputError("no --link given", "for example --link 0.5MB/s,20ms --link 2MB/s,20ms")
    manifest, pairs = load_device_pairs(directory, threads=1, slowdown=device_slowdown)
    if not pairs:
        raise InputError(f"{directory}: no image or encoder pair to bench (causal-LM pairs generate instead)")
    inputs, labels, source = bench_inputs(requests + warmup, data)
    server, cores = _pin_and_start(directory, engine, port, cores)
    results: list[PairLinkResult] = []
    protocols: dict[str, Protocol] = {}
    try:
        server.wait_ready()
        host, sport = server.url.split(":")
        direct = V2Client(server.url)
        for pair in pairs.values():
            clock = _triton_clock(direct, pair) if engine == "triton" else None
            protocols[pair.model] = measure_protocol(pair, direct, inputs, server_clock=clock)
        direct.close()
        total = len(links) * len(pairs) * (requests + warmup)
        done = 0
        for link in links:
            shape = LinkShape(link.rate, link.rtt_ms / 2)
            proxy, _ = start_link_thread((host, int(sport)), shape, LinkShape(link.rate, link.rtt_ms / 2))
            client = V2Client(f"127.0.0.1:{proxy.port}")
            direct = V2Client(server.url) if engine == "triton" else None  # statistics, not over the link
            try:
                for pair in pairs.values():
                    records = []
                    clock = _triton_clock(direct, pair) if direct is not None else None
                    for i in range(requests + warmup):
                        k = i % len(inputs)
                        record = pair.request(client, inputs[k], i - warmup, label=labels[k], server_clock=clock)
                        if i >= warmup:
                            records.append(record)
                        done += 1
                        if progress:
                            progress(f"{pair.pair.cut} over {link.name}", done, total)
                    results.append(_summarise(pair, link, records, protocols[pair.model]))
            finally:
                client.close()
                if direct is not None:
                    direct.close()
                proxy.stop()
    finally:
        server.stop()
    return BenchReport(export=str(directory), engine=engine, inputs=source, pinning=_pinning(cores, device_slowdown),
                       limits={"total": TOTAL_LIMIT, "component": COMPONENT_LIMIT,
                               "component_floor_ms": ABSOLUTE_FLOOR_MS}, protocol=protocols,
                       results=results, passed=_judge(results))


def _triton_clock(client: V2Client, pair: DevicePair) -> Callable[[], float]:
    steps = [f"{pair.model}-decode", f"{pair.model}-onnx"]
    return lambda: client.compute_ms(steps)


def run_adaptive_bench(directory: Path, trace: list[tuple[float, float]], rtt_ms: float, seconds: float,
                       engine: str = "embedded", data: Path | None = None, device_slowdown: float = 1.0,
                       progress: Progress | None = None) -> AdaptReport:
    """Every fixed pair, then the adaptive device, each over a fresh link following ``trace`` for
    ``seconds``: medians measured and predicted (the cost model at the trace's rate when each
    request was sent; for the adaptive run, the best pair at that rate)."""
    from aiflow_cli.serve.device.adapt import AdaptiveDevice

    if seconds <= 0 or seconds > 3600:
        raise InputError("--seconds must be between 0 and 3600")
    _, pairs = load_device_pairs(directory, threads=1, slowdown=device_slowdown)
    if len(pairs) < 2:
        raise InputError(f"{directory}: adaptive switching needs at least two exported pairs",
                         "export several cuts: aiflow split MODEL --cut A --cut B --export DIR")
    inputs, labels, source = bench_inputs(64, data)
    server, cores = _pin_and_start(directory, engine, 0, None)
    variants = [*pairs, "adaptive"]
    results = []
    try:
        server.wait_ready()
        host, sport = server.url.split(":")
        direct = V2Client(server.url)
        protocols = {cut: measure_protocol(p, direct, inputs) for cut, p in pairs.items()}
        direct.close()
        for n, variant in enumerate(variants):
            shape = LinkShape(trace[0][1], rtt_ms / 2, trace)
            proxy, _ = start_link_thread((host, int(sport)), shape, LinkShape(trace[0][1], rtt_ms / 2, trace))
            client = V2Client(f"127.0.0.1:{proxy.port}")
            adaptive = AdaptiveDevice(pairs, client) if variant == "adaptive" else None
            records, times, t0, i = [], [], time.monotonic(), 0
            try:
                while (elapsed := time.monotonic() - t0) < seconds:
                    times.append(elapsed)
                    k = i % len(inputs)
                    record = (adaptive.request(inputs[k], i, labels[k]) if adaptive is not None
                              else pairs[variant].request(client, inputs[k], i, labels[k]))
                    records.append(record)
                    i += 1
                    if progress:
                        progress(f"{variant} under the trace", min(int(elapsed), int(seconds)), int(seconds))
            finally:
                client.close()
                proxy.stop()
            results.append(_adapt_result(variant, pairs, records, times, shape, rtt_ms, protocols, adaptive))
            if progress:
                progress("variants", n + 1, len(variants))
    finally:
        server.stop()
    fixed = [r for r in results if r.variant != "adaptive"]
    best, worst = min(fixed, key=lambda r: r.median_ms), max(fixed, key=lambda r: r.median_ms)
    return AdaptReport(export=str(directory), engine=engine, inputs=source, pinning=_pinning(cores, device_slowdown),
                       trace=[[t, r] for t, r in trace], rtt_ms=rtt_ms, seconds=seconds, variants=results,
                       best_fixed=best.variant, worst_fixed=worst.variant)


def _adapt_result(variant: str, pairs: dict[str, DevicePair], records: list[RequestRecord], times: list[float],
                  shape: LinkShape, rtt_ms: float, protocols: dict[str, Protocol], adaptive: Any) -> AdaptVariant:
    def predicted(cut: str, rate: float) -> float:
        c, p = pairs[cut].pair.cost, protocols[cut]
        if c is None:
            raise InputError(f"pair {cut} carries no cost model", "export with --device and --server")
        return predict(cut, c.device_ms * pairs[cut].slowdown, c.encode_ms, round(c.bytes + p.request_bytes),
                       c.server_ms, c.decode_ms, round(p.response_bytes),
                       Link("trace", rate, rate, rtt_ms + p.stack_ms)).total_ms

    rows = [(r, shape.rate_at(t)) for r, t in zip(records, times) if r.status != "failed"]
    preds = [min(predicted(cut, rate) for cut in pairs) if variant == "adaptive" else predicted(variant, rate)
             for _, rate in rows]
    choices: dict[str, int] = {}
    for cut in (adaptive.choices if adaptive is not None else []):
        choices[cut] = choices.get(cut, 0) + 1
    phases = {}
    for rate in dict.fromkeys(rate for _, rate in rows):
        phases[f"{rate:g}"] = round(statistics.median(r.total_ms for r, x in rows if x == rate), 3)
    return AdaptVariant(variant=variant, requests=len(records), failed=len(records) - len(rows),
                        median_ms=round(statistics.median(r.total_ms for r, _ in rows), 3),
                        mean_ms=round(statistics.mean(r.total_ms for r, _ in rows), 3),
                        predicted_median_ms=round(statistics.median(preds), 3),
                        predicted_mean_ms=round(statistics.mean(preds), 3), median_ms_by_rate=phases, choices=choices)
