"""``aiflow serve-pair``: run exported pairs across a real or emulated link on the KServe v2 protocol.

Sub-commands: ``server`` (serve the server halves), ``device`` (run the device halves against a
server), ``generate`` (text across the link: speculative decoding or a split causal LM), ``link`` (an emulated link between them), ``bench`` (all three locally, measured
against the plan's prediction).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from aiflow_cli.cli.common import (
    cli_errors,
    console,
    emit,
    err_console,
    fmt_bytes,
    progress_bar,
    show,
)
from aiflow_cli.cli.options import JsonOpt, OutFileOpt
from aiflow_cli.errors import InputError

__all__ = ["app"]

app = typer.Typer(help="Run exported device/server pairs across a real or emulated link (KServe v2 protocol).",
                  no_args_is_help=True, add_completion=False)

DirArg = Annotated[Path, typer.Argument(metavar="DIR", help="A folder written by aiflow split --export.")]
TokenOpt = Annotated[Optional[Path], typer.Option(
    "--token-file", help="A file holding one secret line: the server requires it as a bearer token (needed to bind "
                         "anything but loopback); the device sends it.")]


def _cores(text: Optional[str]) -> Optional[list[int]]:
    if not text:
        return None
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise InputError(f"--cores: cannot read '{text}'", "for example --cores 1 or --cores 0,1") from None


@app.command("server")
@cli_errors
def server_cmd(
    directory: DirArg,
    host: Annotated[str, typer.Option("--host", help="Address to bind. Loopback by default; others need --token-file.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    token_file: TokenOpt = None,
    engine: Annotated[str, typer.Option(
        "--engine", help="embedded (uvicorn + onnxruntime) or triton (Triton Inference Server from the "
                         "nvidia-pytriton wheel).")] = "embedded",
    threads: Annotated[Optional[int], typer.Option("--threads", help="onnxruntime intra-op threads per model.")] = None,
    cores: Annotated[Optional[str], typer.Option("--cores", help="Pin the server to these cores, e.g. 1.")] = None,
    max_body: Annotated[int, typer.Option("--max-body", help="Largest request body in bytes (413 above).")] = 64 * 2**20,
    max_sessions: Annotated[int, typer.Option("--max-sessions", help="Causal-LM sessions held at once.")] = 64,
    idle_seconds: Annotated[float, typer.Option("--idle-seconds", help="Evict a session idle this long.")] = 300.0,
) -> None:
    """Serve every server half of DIR on the KServe v2 / Open Inference Protocol (one model per pair).

    The manifest is checked first (schema, paths, hashes, declarations); a mismatch refuses to start.
    """
    from aiflow_cli.serve.server import ServeSettings, serve

    if threads is not None and threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}")
    if max_sessions < 1 or not idle_seconds > 0:
        raise InputError("--max-sessions must be at least 1 and --idle-seconds above 0")
    settings = ServeSettings(directory, host, port, token_file, engine, threads, max_body, max_sessions, idle_seconds,
                             _cores(cores))
    err_console.print(f"serving {directory} on http://{host}:{port} ({engine}); Ctrl-C stops", highlight=False)
    serve(settings)


@app.command("link")
@cli_errors
def link_cmd(
    to: Annotated[str, typer.Option("--to", help="The server to forward to, HOST:PORT.")],
    listen: Annotated[int, typer.Option("--listen", help="Local port to listen on (loopback).")] = 9000,
    rate: Annotated[str, typer.Option("--rate", help="Rate each way, e.g. 1MB/s or 8Mbit/s.")] = "1MB/s",
    up_rate: Annotated[Optional[str], typer.Option("--up-rate", help="Uplink rate if it differs from --rate.")] = None,
    delay: Annotated[str, typer.Option("--delay", help="One-way delay each way (RTT = 2 x delay), e.g. 10ms.")] = "10ms",
    trace: Annotated[Optional[Path], typer.Option(
        "--trace", help="CSV 'seconds,rate' lines: the uplink rate follows it over time.")] = None,
) -> None:
    """An emulated link: a TCP proxy with a rate limit and a one-way delay in each direction.

    It knows nothing of HTTP, so it works with any engine and any client.
    """
    import asyncio

    from aiflow_cli.serve.link import LinkProxy, LinkShape, read_trace
    from aiflow_cli.split.links import parse_ms, parse_rate

    host, _, port = to.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--to '{to}': expected HOST:PORT", "for example --to 127.0.0.1:8000")
    down = LinkShape(parse_rate(rate), parse_ms(delay))
    up = LinkShape(parse_rate(up_rate or rate), parse_ms(delay), read_trace(trace) if trace else [])
    proxy = LinkProxy(("127.0.0.1", listen), (host, int(port)), up, down)
    err_console.print(f"link 127.0.0.1:{listen} -> {to}: up {fmt_bytes(up.rate_bytes_per_s)}/s, down "
                      f"{fmt_bytes(down.rate_bytes_per_s)}/s, {down.delay_ms:g} ms each way; Ctrl-C stops", highlight=False)
    try:
        asyncio.run(proxy.serve_forever())
    except KeyboardInterrupt:
        pass


@app.command("device")
@cli_errors
def device_cmd(
    directory: DirArg,
    server: Annotated[str, typer.Option("--server", help="The v2 server (or a link in front of it), HOST:PORT.")],
    cut: Annotated[Optional[str], typer.Option("--cut", help="Which exported pair (default: the first).")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Labelled image folder (default: the shared test split).")]
    = None,
    count: Annotated[int, typer.Option("--count", help="Requests to send.")] = 20,
    token_file: TokenOpt = None,
    out: OutFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run DIR's device half on inputs and the server half over the link; time every part of each request."""
    import json

    from aiflow_cli.serve.bench import bench_inputs
    from aiflow_cli.serve.binding import read_token
    from aiflow_cli.serve.device import V2Client, load_device_pairs

    if count < 1:
        raise InputError(f"--count must be at least 1, got {count}")
    _, pairs = load_device_pairs(directory)
    if not pairs:
        raise InputError(f"{directory}: no image or encoder pair (causal-LM pairs and speculative exports: aiflow serve-pair generate DIR)")
    pair = pairs[cut] if cut in pairs else (next(iter(pairs.values())) if cut is None else None)
    if pair is None:
        raise InputError(f"no pair at cut '{cut}' in {directory}", "exported cuts: " + ", ".join(pairs))
    inputs, labels, source = bench_inputs(count, data)
    client = V2Client(server, read_token(token_file) if token_file else None)
    records = []
    with progress_bar(not as_json) as progress:
        for i in range(count):
            records.append(pair.request(client, inputs[i % len(inputs)], i, labels[i % len(labels)]))
            progress("requests", i + 1, count)
    client.close()
    payload = {"export": str(directory), "cut": pair.pair.cut, "inputs": source, "requests": [r.as_dict() for r in records]}
    if out is not None:
        from aiflow_cli.atomic import write_text_atomic

        write_text_atomic(out, json.dumps(payload, indent=1) + "\n")
    if as_json:
        typer.echo(json.dumps(payload, indent=1))
        return
    table = Table(title=f"{pair.model} via {server}", title_style="bold")
    for col in ("#", "status", "device", "encode", "bytes", "network", "server", "total ms", "top-1", "label"):
        table.add_column(col, justify="right")
    for r in records:
        table.add_row(str(r.index), r.status, f"{r.device_ms:.1f}", f"{r.encode_ms:.1f}", fmt_bytes(r.codec_bytes),
                      f"{r.transfer_ms:.1f}", f"{r.server_ms:.1f}", f"{r.total_ms:.1f}", str(r.prediction), str(r.label))
    show(table)
    ok = [r for r in records if r.prediction is not None and r.label is not None]
    if ok:
        console.print(f"top-1 {sum(r.prediction == r.label for r in ok) / len(ok):.3f} on {len(ok)} requests; "
                      f"failed {sum(r.status == 'failed' for r in records)}")


@app.command("generate")
@cli_errors
def generate_cmd(
    directory: DirArg,
    server: Annotated[str, typer.Option("--server", help="The v2 server (or a link in front of it), HOST:PORT.")],
    prompt: Annotated[list[str], typer.Option("--prompt", help="Text to continue (repeatable).")],
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Tokens to generate per prompt.")] = 64,
    k: Annotated[str, typer.Option("--k", help="Speculative: drafts per round (1-64), or auto (chosen each round "
                                               "from the measured acceptance, draft time and round trip).")] = "4",
    k_max: Annotated[int, typer.Option("--k-max", help="With --k auto: the largest k it may pick.")] = 16,
    temperature: Annotated[float, typer.Option("--temperature", help="0 is greedy (token-identical to the target "
                                                                     "alone); above 0 samples exactly from the target.")]
    = 0.0,
    top_p: Annotated[float, typer.Option("--top-p", help="Sampling: nucleus cut.")] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", help="Sampling: keep the k most likely tokens (0: all).")] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 0,
    server_only: Annotated[bool, typer.Option("--server-only", help="Speculative: also time the target generating "
                                                                    "alone on the server (the baseline).")] = False,
    token_file: TokenOpt = None,
    out: OutFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Generate text across the link: speculative decoding for a draft / target export (the device drafts k
    tokens, the server verifies them in one pass), or a split causal LM (one hidden state per token)."""
    import json

    from aiflow_cli.jobs.generate import GenerateSettings, parse_k, run_generate
    from aiflow_cli.models.speculative import Sampling
    from aiflow_cli.serve.binding import read_token

    settings = GenerateSettings(max_new_tokens, parse_k(k), k_max, Sampling(temperature, top_p, top_k), seed,
                                server_only, token=read_token(token_file) if token_file else None)
    with progress_bar(not as_json) as progress:
        results = run_generate(directory, server, list(prompt), settings, progress)
    payload = {"export": str(directory), "server": server, "generations": [r.as_dict() for r in results]}
    if out is not None:
        from aiflow_cli.atomic import write_text_atomic

        write_text_atomic(out, json.dumps(payload, indent=1) + "\n")
    if as_json:
        typer.echo(json.dumps(payload, indent=1))
        return
    for r in results:
        console.print(f"[bold]{r.prompt}[/]{r.text}", highlight=False)
        figures = [f"{len(r.tokens)} tokens", f"{r.ms_per_token:.1f} ms/token", f"{r.round_trips} round trips"]
        if r.acceptance is not None:
            figures.append(f"acceptance {r.acceptance:.2f}, k {min(r.ks, default=0)}-{max(r.ks, default=0)}")
        if r.sampling_bytes_per_draft is not None:
            figures.append(f"{r.sampling_bytes_per_draft:.0f} B of q per draft")
        if r.server_only_ms_per_token is not None:
            figures.append(f"server-only {r.server_only_ms_per_token:.1f} ms/token")
        if r.resent_prefixes:
            figures.append(f"prefix resent {r.resent_prefixes}x")
        err_console.print("  " + "; ".join(figures), highlight=False)


SlowdownOpt = Annotated[float, typer.Option(
    "--device-slowdown", help="Emulate a device this many times slower than this machine (it waits out the "
                              "difference after device.onnx; predictions scale the device time alike).")]


@app.command("bench")
@cli_errors
def bench_cmd(
    directory: DirArg,
    link: Annotated[Optional[list[str]], typer.Option("--link", help="RATE,RTT, repeatable, e.g. --link 0.5MB/s,20ms.")]
    = None,
    trace: Annotated[Optional[Path], typer.Option(
        "--trace", help="Instead of --link: a CSV 'seconds,rate' the link follows; compares every exported pair "
                        "with the adaptive device (which switches pairs by its own rate estimate).")] = None,
    rtt: Annotated[str, typer.Option("--rtt", help="With --trace: round-trip time.")] = "20ms",
    seconds: Annotated[float, typer.Option("--seconds", help="With --trace: how long each variant runs.")] = 30.0,
    device_slowdown: SlowdownOpt = 1.0,
    requests: Annotated[int, typer.Option("--requests", help="Timed requests per pair and link.")] = 50,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed requests first.")] = 3,
    engine: Annotated[str, typer.Option("--engine", help="embedded or triton.")] = "embedded",
    data: Annotated[Optional[Path], typer.Option("--data", help="Labelled image folder (default: the test split).")]
    = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="PNG: measured vs predicted per component.")] = None,
    speculative: Annotated[bool, typer.Option(
        "--speculative", help="For a draft / target export: TPOT against k per link, with server-only, device-only "
                              "and co-located baselines and the cost model (the study).")] = False,
    ks: Annotated[str, typer.Option("--ks", help="With --speculative: the draft lengths, e.g. 1,2,4,8,16,24.")]
    = "1,2,3,4,6,8,12,16,24",
    prompts: Annotated[int, typer.Option("--prompts", help="With --speculative: Spec-Bench prompts per point.")] = 8,
    new_tokens: Annotated[int, typer.Option("--new-tokens", help="With --speculative: tokens per prompt.")] = 32,
    out: OutFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start the server and the link here, send real requests over each link to each pair, and compare every
    component of the latency with the plan's prediction (device, encode, network, server, total; p50/p90/p99).

    Device and server are pinned to separate cores (one thread each) so that they do not contend.
    """
    from aiflow_cli.atomic import check_writable
    from aiflow_cli.serve.bench import parse_bench_link, run_bench

    if speculative:
        return _speculative(directory, link or ["0.5MB/s,20ms", "1MB/s,20ms", "2MB/s,20ms"], ks, prompts, new_tokens,
                            plot, out, as_json)
    if bool(link) == bool(trace):
        raise InputError("give --link (fixed links) or --trace (adaptive study), not both or neither",
                         "for example --link 0.5MB/s,20ms --link 2MB/s,20ms")
    for path in (out, plot):
        if path is not None:
            check_writable(path)
    if trace is not None:
        return _adaptive(directory, trace, rtt, seconds, engine, data, device_slowdown, out, as_json)
    links = [parse_bench_link(text) for text in link or []]
    with progress_bar(not as_json) as progress:
        report = run_bench(directory, links, requests, warmup, engine, data, progress=progress,
                           device_slowdown=device_slowdown)
    from aiflow_cli.serve.plot import plot_bench

    if emit(report.model_dump_json(indent=2), out, as_json, plot, lambda path: plot_bench(report, path)):
        return
    console.print(f"[bold]{report.export}[/] ({report.engine}); {report.inputs}; {report.pinning}", highlight=False)
    for model, p in report.protocol.items():
        console.print(f"{model}: on loopback the protocol adds {p.request_bytes:.0f} B per request, answers take "
                      f"{p.response_bytes:.0f} B and the serving stack {p.stack_ms:.2f} ms (added to the prediction)",
                      highlight=False)
    table = Table(title="measured (median) / predicted ms, error", title_style="bold")
    for col in ("pair", "link", "device", "encode", "network", "server", "total", "p90", "p99", "bytes", "top-1"):
        table.add_column(col, justify="left" if col in ("pair", "link") else "right")
    for r in report.results:
        cells = [f"{c.measured_ms:.1f}/{c.predicted_ms:.1f} {100 * c.error:+.0f}%" if c.predicted_ms is not None
                 else f"{c.measured_ms:.1f}" for c in r.components]
        table.add_row(f"{r.cut} {r.codec}", r.link, *cells, f"{r.total_p90_ms:.1f}", f"{r.total_p99_ms:.1f}",
                      f"{r.codec_bytes:,.0f}+{r.protocol_bytes:,.0f}",
                      "-" if r.top1 is None else f"{r.top1.value:.3f}")
    show(table)
    verdict = "[green]within[/]" if report.passed else "[red]outside[/]"
    console.print(f"{verdict} the bounds: total {report.limits['total']:.0%}, each component {report.limits['component']:.0%}")


def _speculative(directory: Path, link: list[str], ks_text: str, prompts: int, new_tokens: int, plot: Optional[Path],
                 out: Optional[Path], as_json: bool) -> None:
    from aiflow_cli.atomic import check_writable
    from aiflow_cli.serve.bench import parse_bench_link
    from aiflow_cli.serve.spec_study import PREDICTION_LIMIT, run_spec_study

    try:
        ks = sorted({int(k) for k in ks_text.split(",") if k.strip()})
    except ValueError:
        raise InputError(f"--ks '{ks_text}': expected whole numbers", "for example --ks 1,2,4,8") from None
    if not ks or ks[0] < 1 or ks[-1] > 64:
        raise InputError(f"--ks '{ks_text}': each k must be in 1..64")
    if prompts < 1 or new_tokens < 4:
        raise InputError("--prompts must be at least 1 and --new-tokens at least 4")
    for path in (out, plot):
        if path is not None:
            check_writable(path)
    links = [parse_bench_link(text) for text in link]
    with progress_bar(not as_json) as progress:
        study = run_spec_study(directory, links, ks, prompts, new_tokens, progress=progress)
    from aiflow_cli.serve.spec_plot import plot_spec_study

    if emit(study.model_dump_json(indent=2), out, as_json, plot, lambda path: plot_spec_study(study, path)):
        return
    console.print(f"[bold]{study.draft} -> {study.target}[/]: {study.prompts} Spec-Bench prompts x {study.new_tokens} "
                  f"tokens; device-only {study.device_only_tpot_ms:.1f} ms/token (agreement with the target "
                  f"{study.device_only_agreement:.2f}); draft {study.probe.draft_ms_per_token:.1f} ms/token, verify "
                  + ", ".join(f"k={k} {v:.1f}" for k, v in study.probe.verify_ms.items()) + " ms", highlight=False)
    table = Table(title="TPOT ms, measured / cost model (error)", title_style="bold")
    table.add_column("k", justify="right")
    for base in study.baselines:
        table.add_column(base.link, justify="right")
    table.add_column("acceptance", justify="right")
    table.add_column("co-located", justify="right")
    for k in [*ks, "auto"]:
        row = [str(k)]
        for base in study.baselines:
            p = next((q for q in study.points if q.link == base.link and q.k == k), None)
            row.append("-" if p is None else f"{p.tpot_ms:.1f} / {p.predicted_tpot_ms:.1f} ({100 * p.error:+.0f}%)")
        first = next((q for q in study.points if q.k == k), None)
        row += ["-" if first is None else f"{first.acceptance:.2f}",
                f"{study.colocated_tpot_ms[k]:.1f}" if k in study.colocated_tpot_ms else "-"]
        table.add_row(*row)
    table.add_row("server-only", *[f"{b.server_only_tpot_ms:.1f}" for b in study.baselines], "", "")
    show(table)
    for base in study.baselines:
        best = study.best_k[base.link]
        point = next(q for q in study.points if q.link == base.link and q.k == best)
        console.print(f"{base.link}: best k {best} at {point.tpot_ms / base.server_only_tpot_ms:.2f}x server-only; "
                      f"crossover k {study.crossover_k[base.link]}", highlight=False)
    worst = max(abs(p.error) for p in study.points)
    console.print(("[green]within[/]" if worst <= PREDICTION_LIMIT else "[red]outside[/]")
                  + f" {PREDICTION_LIMIT:.0%} for every point (worst {worst:.0%})")


def _adaptive(directory: Path, trace: Path, rtt: str, seconds: float, engine: str, data: Optional[Path],
              slowdown: float, out: Optional[Path], as_json: bool) -> None:
    from aiflow_cli.atomic import write_text_atomic
    from aiflow_cli.serve.bench import run_adaptive_bench
    from aiflow_cli.serve.link import read_trace
    from aiflow_cli.split.links import parse_ms

    with progress_bar(not as_json) as progress:
        report = run_adaptive_bench(directory, read_trace(trace), parse_ms(rtt), seconds, engine, data, slowdown,
                                    progress)
    text = report.model_dump_json(indent=2)
    if out is not None:
        write_text_atomic(out, text + "\n")
    if as_json:
        typer.echo(text)
        return
    console.print(f"[bold]{report.export}[/] under the trace {report.trace} (RTT {report.rtt_ms:g} ms); "
                  f"{report.pinning}", highlight=False)
    table = Table(title="ms per request over the trace: measured / predicted", title_style="bold")
    rates = list(report.variants[0].median_ms_by_rate)
    for col in ("variant", "requests", "median", "mean", *[f"median at {fmt_bytes(float(r))}/s" for r in rates],
                "cuts used"):
        table.add_column(col)
    for v in report.variants:
        table.add_row(v.variant, f"{v.requests} ({v.failed} failed)", f"{v.median_ms:.1f} / {v.predicted_median_ms:.1f}",
                      f"{v.mean_ms:.1f} / {v.predicted_mean_ms:.1f}",
                      *[f"{v.median_ms_by_rate.get(r, float('nan')):.1f}" for r in rates],
                      ", ".join(f"{k} x{n}" for k, n in v.choices.items()) or "-")
    show(table)
