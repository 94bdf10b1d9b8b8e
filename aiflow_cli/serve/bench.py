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
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from aiflow_cli.errors import InputError
from aiflow_cli.schemas.bench import BenchReport, Component, PairLinkResult
from aiflow_cli.serve.device import DevicePair, RequestRecord, V2Client, load_device_pairs
from aiflow_cli.serve.link import LinkShape, start_link_thread
from aiflow_cli.split.cost import Link, predict

__all__ = ["BenchLink", "parse_bench_link", "ServerProcess", "run_bench", "TOTAL_LIMIT", "COMPONENT_LIMIT",
           "bench_inputs"]

TOTAL_LIMIT = 0.15
COMPONENT_LIMIT = 0.20
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


class ServerProcess:
    """``aiflow serve-pair server`` in a child process, started and stopped by the bench."""

    def __init__(self, directory: Path, port: int, engine: str = "embedded", cores: list[int] | None = None,
                 threads: int = 1, extra: list[str] | None = None) -> None:
        cmd = [sys.executable, "-m", "aiflow_cli", "serve-pair", "server", str(directory), "--port", str(port),
               "--engine", engine, "--threads", str(threads), *(extra or [])]
        if cores:
            cmd += ["--cores", ",".join(map(str, cores))]
        self.url = f"127.0.0.1:{port}"
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        import tritonclient.http as httpclient

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() if self.proc.stderr else "").strip().splitlines()
                raise InputError(f"the server exited before it was ready: {(err or ['no output'])[-1]}")
            try:
                if httpclient.InferenceServerClient(self.url, connection_timeout=1, network_timeout=1).is_server_ready():
                    return
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            time.sleep(0.2)
        self.stop()
        raise InputError(f"the server did not answer within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def bench_inputs(count: int, data: Path | None = None) -> tuple[list[Any], list[int | None], str]:
    """Real test-split photos (with labels) when there are any, else the zoo's example input."""
    from aiflow_cli.data.imagenet import default_image_roots, load_batch, read_labels

    roots = [data] if data is not None else default_image_roots()
    if roots:
        records = read_labels(roots, "test")[:count]
        images, labels = load_batch(records)
        return [images[i:i + 1].numpy() for i in range(len(records))], labels.tolist(), \
            f"{len(records)} test-split photos from {', '.join(map(str, roots))}"
    raise InputError("no input photos for the bench", "pass --data FOLDER or set AIFLOW_DATA")


def _median(records: list[RequestRecord], field: str) -> float:
    return statistics.median(getattr(r, field) for r in records)


def _component(name: str, measured: float, predicted: float | None) -> Component:
    error = None if predicted is None or measured <= 0 else round((predicted - measured) / measured, 4)
    return Component(name=name, measured_ms=round(measured, 3), predicted_ms=None if predicted is None else round(predicted, 3),
                     error=error)


def _summarise(pair: DevicePair, link: BenchLink, records: list[RequestRecord]) -> PairLinkResult:
    from aiflow_cli.stats import share

    ok = [r for r in records if r.status in ("ok", "retried")]
    if not ok:
        raise InputError(f"every request to {pair.model} over {link.name} failed: {records[0].error}")
    cost = pair.pair.cost
    pred = None
    if cost is not None:
        pred = predict(pair.pair.cut, cost.device_ms, cost.encode_ms, cost.bytes, cost.server_ms, cost.decode_ms,
                       cost.result_bytes, Link(link.name, link.rate, link.rate, link.rtt_ms))
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
        components=components, total_p50_ms=round(float(np.percentile(totals, 50)), 3),
        total_p90_ms=round(float(np.percentile(totals, 90)), 3), total_p99_ms=round(float(np.percentile(totals, 99)), 3),
        codec_bytes=_median(ok, "codec_bytes"),
        protocol_bytes=statistics.median(r.request_bytes - r.codec_bytes for r in ok),
        top1=share([p == y for p, y in labelled]) if labelled else None,
        predictions=[r.prediction if r.prediction is not None else -1 for r in records])


def _judge(results: list[PairLinkResult]) -> bool:
    for res in results:
        for c in res.components:
            if c.error is None:
                return False
            limit = TOTAL_LIMIT if c.name == "total" else COMPONENT_LIMIT
            if abs(c.error) > limit:
                return False
    return bool(results)


def run_bench(directory: Path, links: list[BenchLink], requests: int = 50, warmup: int = 3, engine: str = "embedded",
              data: Path | None = None, port: int = 0, cores: tuple[int, int] | None = None,
              progress: Progress | None = None) -> BenchReport:
    from aiflow_cli.serve.server import pin_to_cores

    if requests < 1 or warmup < 0:
        raise InputError("--requests must be at least 1 and --warmup 0 or more")
    if not links:
        raise InputError("no --link given", "for example --link 0.5MB/s,20ms --link 2MB/s,20ms")
    manifest, pairs = load_device_pairs(directory, threads=1)
    if not pairs:
        raise InputError(f"{directory}: no image or encoder pair to bench (causal-LM pairs generate instead)")
    inputs, labels, source = bench_inputs(requests + warmup, data)
    available = sorted(os.sched_getaffinity(0))
    if cores is None:
        cores = (available[0], available[-1]) if len(available) > 1 else (available[0], available[0])
    pin_to_cores([cores[0]])
    server = ServerProcess(Path(directory), port or _free_port(), engine, [cores[1]])
    results: list[PairLinkResult] = []
    try:
        server.wait_ready()
        host, sport = server.url.split(":")
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
                    steps = [f"{pair.model}-decode", f"{pair.model}-onnx"]
                    clock = (lambda: direct.compute_ms(steps)) if direct is not None else None
                    for i in range(requests + warmup):
                        k = i % len(inputs)
                        record = pair.request(client, inputs[k], i - warmup, label=labels[k], server_clock=clock)
                        if i >= warmup:
                            records.append(record)
                        done += 1
                        if progress:
                            progress(f"{pair.pair.cut} over {link.name}", done, total)
                    results.append(_summarise(pair, link, records))
            finally:
                client.close()
                if direct is not None:
                    direct.close()
                proxy.stop()
    finally:
        server.stop()
    pinning = (f"device (this process, 1 thread) on core {cores[0]}, server (1 thread) on core {cores[1]}"
               + (" (the same core: this machine has one)" if cores[0] == cores[1] else ""))
    return BenchReport(export=str(directory), engine=engine, inputs=source, pinning=pinning,
                       limits={"total": TOTAL_LIMIT, "component": COMPONENT_LIMIT}, results=results,
                       passed=_judge(results))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
