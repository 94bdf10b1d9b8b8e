"""``serve()``, ``run_link()``, ``run_device()`` and ``bench()``: an export's server halves on the
KServe v2 protocol, an emulated link in front of them, the device halves against them, and the
measured study of all three against the plan's prediction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from aiflow_cli.errors import InputError
from aiflow_cli.serve.device.client import RETRY_SECONDS
from aiflow_cli.serve.launch import ServeSettings
from aiflow_cli.settings import Settings, split_list

if TYPE_CHECKING:
    from aiflow_cli.schemas.bench import AdaptReport, BenchReport
    from aiflow_cli.schemas.spec_study import SpecStudy

__all__ = ["ServeSettings", "serve", "LinkSettings", "run_link", "DeviceSettings", "DeviceRun", "run_device",
           "BenchSettings", "bench"]

Progress = Callable[[str, int, int], None]


def serve(settings: ServeSettings) -> None:
    """Check the export (schema, paths, hashes, declarations), then serve until interrupted."""
    from aiflow_cli.serve.server.run import (
        serve as serve_export,  # the one door into the server package
    )

    serve_export(settings)


class LinkSettings(Settings):
    to: str = Field(description="The server to forward to, HOST:PORT.")
    listen: int = Field(9000, ge=0, le=65535, description="Local port to listen on (loopback).")
    rate: str = Field("1MB/s", description="Rate each way, e.g. 1MB/s or 8Mbit/s.")
    up_rate: Optional[str] = Field(None, description="Uplink rate if it differs from --rate.")
    delay: str = Field("10ms", description="One-way delay each way (RTT = 2 x delay), e.g. 10ms.")
    trace: Optional[Path] = Field(None, description="CSV 'seconds,rate' lines: the uplink rate follows it over time.")

    @field_validator("to")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InputError(f"--to '{value}': expected HOST:PORT with a port in 1-65535", "for example --to 127.0.0.1:8000")
        return value


def run_link(settings: LinkSettings, started: Callable[[Any], None] | None = None) -> None:
    """Shape both directions between a loopback port and the server until interrupted; ``started``
    gets the proxy once it listens."""
    from aiflow_cli.serve.link.proxy import LinkProxy, LinkShape, read_trace
    from aiflow_cli.split.links import parse_ms, parse_rate

    s = settings
    host, _, port = s.to.rpartition(":")
    down = LinkShape(parse_rate(s.rate), parse_ms(s.delay))
    up = LinkShape(parse_rate(s.up_rate or s.rate), parse_ms(s.delay), read_trace(s.trace) if s.trace else [])
    proxy = LinkProxy(("127.0.0.1", s.listen), (host, int(port)), up, down)
    try:
        proxy.run(on_start=None if started is None else lambda: started(proxy))
    except KeyboardInterrupt:
        pass


class DeviceSettings(Settings):
    directory: Path = Field(description="A folder written by aiflow split --export.")
    server: str = Field(description="The v2 server (or a link in front of it), HOST:PORT.")
    cut: Optional[str] = Field(None, description="Which exported pair (default: the first).")
    data: Optional[Path] = Field(None, description="Labelled image folder (default: the shared test split).")
    count: int = Field(20, ge=1, le=1_000_000, description="Requests to send.")
    retry_seconds: float = Field(RETRY_SECONDS, ge=0, le=600, description="How long a request keeps retrying a "
                                                                        "connection failure or a 5xx (long enough for "
                                                                        "a server restart).")
    token_file: Optional[Path] = Field(None, description="A file holding the server's bearer token.")


@dataclass
class DeviceRun:
    model: str
    cut: str
    inputs: str
    records: list[Any]

    @property
    def failed(self) -> list[Any]:
        return [r for r in self.records if r.status == "failed"]

    def failure_summary(self) -> str:
        """'3 of 200 requests failed: <reason> (x2); <reason> (x1)' (empty when none did)."""
        reasons: dict[str, int] = {}
        for r in self.failed:
            reasons[r.error or "no reason given"] = reasons.get(r.error or "no reason given", 0) + 1
        if not reasons:
            return ""
        return f"{len(self.failed)} of {len(self.records)} requests failed: " + "; ".join(
            f"{why[:160]} (x{n})" for why, n in sorted(reasons.items(), key=lambda kv: -kv[1]))

    def as_dict(self, directory: Path) -> dict[str, Any]:
        return {"export": str(directory), "cut": self.cut, "inputs": self.inputs,
                "requests": [r.as_dict() for r in self.records]}


def run_device(settings: DeviceSettings, progress: Progress | None = None) -> DeviceRun:
    """Run the export's device half on real inputs and its server half over the link, timing every part."""
    from aiflow_cli.serve.binding import read_token
    from aiflow_cli.serve.device.client import V2Client
    from aiflow_cli.serve.device.pairs import bench_inputs, load_device_pairs

    s = settings
    _, pairs = load_device_pairs(s.directory)
    if not pairs:
        raise InputError(f"{s.directory}: no image or encoder pair (causal-LM pairs and speculative exports: aiflow "
                         "serve-pair generate DIR)")
    pair = pairs[s.cut] if s.cut in pairs else (next(iter(pairs.values())) if s.cut is None else None)
    if pair is None:
        raise InputError(f"no pair at cut '{s.cut}' in {s.directory}", "exported cuts: " + ", ".join(pairs))
    inputs, labels, source = bench_inputs(s.count, s.data)
    client = V2Client(s.server, read_token(s.token_file) if s.token_file else None, retry_seconds=s.retry_seconds)
    records = []
    try:
        for i in range(s.count):
            records.append(pair.request(client, inputs[i % len(inputs)], i, labels[i % len(labels)]))
            if progress:
                progress("requests", i + 1, s.count)
    finally:
        client.close()
    return DeviceRun(pair.model, pair.pair.cut, source, records)


class BenchSettings(Settings):
    directory: Path = Field(description="A folder written by aiflow split --export.")
    link: list[str] = Field(default_factory=list, description="RATE,RTT, repeatable, e.g. --link 0.5MB/s,20ms.")
    trace: Optional[Path] = Field(None, description="Instead of --link: a CSV 'seconds,rate' the link follows; "
                                                    "compares every exported pair with the adaptive device (which "
                                                    "switches pairs by its own rate estimate).")
    rtt: str = Field("20ms", description="With --trace: round-trip time.")
    seconds: float = Field(30.0, gt=0, le=3600, description="With --trace: how long each variant runs.")
    device_slowdown: float = Field(1.0, ge=1.0, le=1000.0, description="Emulate a device this many times slower than "
                                                                       "this machine (it waits out the difference after "
                                                                       "device.onnx; predictions scale the device time "
                                                                       "alike).")
    requests: int = Field(50, ge=1, le=100_000, description="Timed requests per pair and link.")
    warmup: int = Field(3, ge=0, le=1000, description="Untimed requests first.")
    engine: Literal["embedded", "triton"] = Field("embedded", description="embedded or triton.")
    data: Optional[Path] = Field(None, description="Labelled image folder (default: the test split).")
    speculative: bool = Field(False, description="For a draft / target export: TPOT against k per link, with "
                                                 "server-only, device-only and co-located baselines and the cost model "
                                                 "(the study).")
    ks: list[int] = Field([1, 2, 3, 4, 6, 8, 12, 16, 24], description="With --speculative: the draft lengths, e.g. "
                                                                      "1,2,4,8,16,24.")
    prompts: int = Field(8, ge=1, le=10_000, description="With --speculative: Spec-Bench prompts per point.")
    overlap: bool = Field(False, description="With --speculative: every k again with the next block drafted while "
                                             "each verification is in flight (the gain per k and link).")
    new_tokens: int = Field(32, ge=4, le=4096, description="With --speculative: tokens per prompt.")

    SPECULATIVE_LINKS: ClassVar[tuple[str, ...]] = ("0.5MB/s,20ms", "1MB/s,20ms", "2MB/s,20ms")  # --speculative without --link

    @field_validator("ks", mode="before")
    @classmethod
    def _ks(cls, value: object) -> object:
        try:
            ks = sorted({int(k) for k in split_list(value)})
        except (TypeError, ValueError):
            raise InputError(f"--ks '{value}': expected whole numbers", "for example --ks 1,2,4,8") from None
        if not ks or ks[0] < 1 or ks[-1] > 64:
            raise InputError(f"--ks '{value}': each k must be in 1..64")
        return ks

    @model_validator(mode="after")
    def _one_mode(self) -> "BenchSettings":
        if not self.speculative and bool(self.link) == bool(self.trace):
            raise InputError("give --link (fixed links) or --trace (adaptive study), not both or neither",
                             "for example --link 0.5MB/s,20ms --link 2MB/s,20ms")
        return self


def bench(settings: BenchSettings, progress: Progress | None = None
          ) -> "Union[BenchReport, AdaptReport, SpecStudy]":
    """Start the server and the link here and measure: each pair over each fixed link against the plan
    (a BenchReport), the adaptive device under a rate trace (an AdaptReport), or the speculative study
    (a SpecStudy)."""
    from aiflow_cli.serve.studies.bench import parse_bench_link

    s = settings
    if s.speculative:
        from aiflow_cli.serve.studies.spec_study import run_spec_study

        links = [parse_bench_link(text) for text in s.link or BenchSettings.SPECULATIVE_LINKS]
        return run_spec_study(s.directory, links, s.ks, s.prompts, s.new_tokens, overlap=s.overlap, progress=progress)
    if s.trace is not None:
        from aiflow_cli.serve.link.proxy import read_trace
        from aiflow_cli.serve.studies.bench import run_adaptive_bench
        from aiflow_cli.split.links import parse_ms

        return run_adaptive_bench(s.directory, read_trace(s.trace), parse_ms(s.rtt), s.seconds, s.engine, s.data,
                                  s.device_slowdown, progress)
    from aiflow_cli.serve.studies.bench import run_bench

    return run_bench(s.directory, [parse_bench_link(text) for text in s.link], s.requests, s.warmup, s.engine, s.data,
                     progress=progress, device_slowdown=s.device_slowdown)


