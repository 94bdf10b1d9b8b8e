"""``aiflow serve-pair``: run exported pairs across a real or emulated link on the KServe v2 protocol.

Sub-commands: ``server`` (serve the server halves), ``device`` (run the device halves against a
server), ``generate`` (text across the link: speculative decoding or a split causal LM), ``link``
(an emulated link between them), ``bench`` (all three locally, measured against the plan's
prediction). Each builds its settings and calls one library entry in :mod:`aiflow_cli.api`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from aiflow_cli.api.generate import GenerateSettings
from aiflow_cli.api.serve import (
    BenchSettings,
    DeviceSettings,
    LinkSettings,
    ServeSettings,
)
from aiflow_cli.cli.common import cli_errors, console, emit, err_console, fmt_bytes, progress_bar, show
from aiflow_cli.cli.options import DirArg, JsonOpt, OutFileOpt, check_outputs, opt

__all__ = ["app"]

app = typer.Typer(help="Run exported device/server pairs across a real or emulated link (KServe v2 protocol).",
                  no_args_is_help=True, add_completion=False)

V, VD = ServeSettings, ServeSettings.defaults()


@app.command("server")
@cli_errors
def server_cmd(
    directory: DirArg,
    host: Annotated[str, opt(V, "host")] = VD.host,
    port: Annotated[int, opt(V, "port")] = VD.port,
    token_file: Annotated[Optional[Path], opt(V, "token_file")] = VD.token_file,
    engine: Annotated[str, opt(V, "engine")] = VD.engine,
    threads: Annotated[Optional[int], opt(V, "threads")] = VD.threads,
    cores: Annotated[Optional[str], opt(V, "cores")] = None,
    max_body: Annotated[int, opt(V, "max_body")] = VD.max_body,
    max_batch: Annotated[int, opt(V, "max_batch")] = VD.max_batch,
    max_sessions: Annotated[int, opt(V, "max_sessions")] = VD.max_sessions,
    idle_seconds: Annotated[float, opt(V, "idle_seconds")] = VD.idle_seconds,
) -> None:
    """Serve every server half of DIR on the KServe v2 / Open Inference Protocol (one model per pair).

    The manifest is checked first (schema, paths, hashes, declarations); a mismatch refuses to start.
    """
    from aiflow_cli.api.serve import serve

    settings = V.from_options(locals())
    err_console.print(f"serving {directory} on http://{host}:{port} ({engine}); Ctrl-C stops", highlight=False)
    serve(settings)


L, LD = LinkSettings, LinkSettings.defaults()


@app.command("link")
@cli_errors
def link_cmd(
    to: Annotated[str, opt(L, "to")],
    listen: Annotated[int, opt(L, "listen")] = LD.listen,
    rate: Annotated[str, opt(L, "rate")] = LD.rate,
    up_rate: Annotated[Optional[str], opt(L, "up_rate")] = LD.up_rate,
    delay: Annotated[str, opt(L, "delay")] = LD.delay,
    trace: Annotated[Optional[Path], opt(L, "trace")] = LD.trace,
) -> None:
    """An emulated link: a TCP proxy with a rate limit and a one-way delay in each direction.

    It knows nothing of HTTP, so it works with any engine and any client.
    """
    from aiflow_cli.api.serve import run_link

    def started(proxy) -> None:  # noqa: ANN001 - LinkProxy
        up, down = proxy.up_shape, proxy.down_shape
        err_console.print(f"link 127.0.0.1:{listen} -> {to}: up {fmt_bytes(up.rate_bytes_per_s)}/s, down "
                          f"{fmt_bytes(down.rate_bytes_per_s)}/s, {down.delay_ms:g} ms each way; Ctrl-C stops",
                          highlight=False)

    run_link(L.from_options(locals()), started)


E, ED = DeviceSettings, DeviceSettings.defaults()


@app.command("device")
@cli_errors
def device_cmd(
    directory: DirArg,
    server: Annotated[str, opt(E, "server")],
    cut: Annotated[Optional[str], opt(E, "cut")] = ED.cut,
    data: Annotated[Optional[Path], opt(E, "data")] = ED.data,
    count: Annotated[int, opt(E, "count")] = ED.count,
    retry_seconds: Annotated[float, opt(E, "retry_seconds")] = ED.retry_seconds,
    token_file: Annotated[Optional[Path], opt(E, "token_file")] = ED.token_file,
    out: OutFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run DIR's device half on inputs and the server half over the link; time every part of each request.

    Exits 4 when any request failed (after retrying for --retry-seconds), with a line giving the reasons.
    """
    import json

    from aiflow_cli.api.serve import run_device

    settings = E.from_options(locals())
    with progress_bar(not as_json) as progress:
        run = run_device(settings, progress)
    if not emit(json.dumps(run.as_dict(directory), indent=1), out, as_json):
        _render_device(run, server)
    if run.failed:
        err_console.print(f"[bold red]error:[/] {run.failure_summary()}", highlight=False, soft_wrap=True)
        raise typer.Exit(4)


def _render_device(run, server: str) -> None:  # noqa: ANN001 - DeviceRun
    records = run.records
    table = Table(title=f"{run.model} via {server}", title_style="bold")
    for col in ("#", "status", "device", "encode", "bytes", "network", "server", "total ms", "top-1", "label"):
        table.add_column(col, justify="right")
    for r in records:
        status = r.status if r.status != "failed" else f"failed: {(r.error or 'no reason given')[:60]}"
        table.add_row(str(r.index), status, f"{r.device_ms:.1f}", f"{r.encode_ms:.1f}", fmt_bytes(r.codec_bytes),
                      f"{r.transfer_ms:.1f}", f"{r.server_ms:.1f}", f"{r.total_ms:.1f}", str(r.prediction), str(r.label))
    show(table)
    ok = [r for r in records if r.prediction is not None and r.label is not None]
    if ok:
        console.print(f"top-1 {sum(r.prediction == r.label for r in ok) / len(ok):.3f} on {len(ok)} requests; "
                      f"failed {sum(r.status == 'failed' for r in records)}")


G, GD = GenerateSettings, GenerateSettings.defaults()


@app.command("generate")
@cli_errors
def generate_cmd(
    directory: DirArg,
    server: Annotated[str, opt(G, "server")],
    prompt: Annotated[list[str], opt(G, "prompt")],
    max_new_tokens: Annotated[int, opt(G, "max_new_tokens")] = GD.max_new_tokens,
    k: Annotated[str, opt(G, "k")] = GD.k,
    k_max: Annotated[int, opt(G, "k_max")] = GD.k_max,
    temperature: Annotated[float, opt(G, "temperature")] = GD.temperature,
    top_p: Annotated[float, opt(G, "top_p")] = GD.top_p,
    top_k: Annotated[int, opt(G, "top_k")] = GD.top_k,
    seed: Annotated[int, opt(G, "seed")] = GD.seed,
    server_only: Annotated[bool, opt(G, "server_only")] = GD.server_only,
    overlap: Annotated[bool, opt(G, "overlap")] = GD.overlap,
    token_file: Annotated[Optional[Path], opt(G, "token_file")] = GD.token_file,
    out: OutFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Generate text across the link: speculative decoding for a draft / target export (the device drafts k
    tokens, the server verifies them in one pass), or a split causal LM (one hidden state per token)."""
    import json

    from aiflow_cli.api.generate import generate

    settings = G.from_options(locals())
    with progress_bar(not as_json) as progress:
        results = generate(settings, progress)
    payload = {"export": str(directory), "server": server, "generations": [r.as_dict() for r in results]}
    if emit(json.dumps(payload, indent=1), out, as_json):
        return
    _render_generations(results)


def _render_generations(results) -> None:  # noqa: ANN001 - list[GeneratedText]
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


B, BD = BenchSettings, BenchSettings.defaults()


@app.command("bench")
@cli_errors
def bench_cmd(
    directory: DirArg,
    link: Annotated[Optional[list[str]], opt(B, "link")] = None,
    trace: Annotated[Optional[Path], opt(B, "trace")] = BD.trace,
    rtt: Annotated[str, opt(B, "rtt")] = BD.rtt,
    seconds: Annotated[float, opt(B, "seconds")] = BD.seconds,
    device_slowdown: Annotated[float, opt(B, "device_slowdown")] = BD.device_slowdown,
    requests: Annotated[int, opt(B, "requests")] = BD.requests,
    warmup: Annotated[int, opt(B, "warmup")] = BD.warmup,
    engine: Annotated[str, opt(B, "engine")] = BD.engine,
    data: Annotated[Optional[Path], opt(B, "data")] = BD.data,
    speculative: Annotated[bool, opt(B, "speculative")] = BD.speculative,
    ks: Annotated[str, opt(B, "ks")] = ",".join(map(str, BD.ks)),
    prompts: Annotated[int, opt(B, "prompts")] = BD.prompts,
    new_tokens: Annotated[int, opt(B, "new_tokens")] = BD.new_tokens,
    overlap: Annotated[bool, opt(B, "overlap")] = BD.overlap,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="PNG: measured vs predicted per component (with "
                                                                "--speculative: TPOT against k).")] = None,
    out: OutFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start the server and the link here, send real requests over each link to each pair, and compare every
    component of the latency with the plan's prediction (device, encode, network, server, total; p50/p90/p99).

    Device and server are pinned to separate cores (one thread each) so that they do not contend.
    """
    from aiflow_cli.api.serve import bench
    from aiflow_cli.schemas.bench import BenchReport
    from aiflow_cli.schemas.spec_study import SpecStudy
    from aiflow_cli.serve.studies.plot import plot_bench
    from aiflow_cli.serve.studies.spec_plot import plot_spec_study

    settings = B.from_options(locals())
    check_outputs(out, plot)
    with progress_bar(not as_json) as progress:
        report = bench(settings, progress)
    draw = {BenchReport: plot_bench, SpecStudy: plot_spec_study}.get(type(report))
    if emit(report.model_dump_json(indent=2), out, as_json, plot if draw else None,
            lambda path: draw(report, path)):
        return
    {BenchReport: _render_bench, SpecStudy: _render_spec}.get(type(report), _render_adapt)(report)


def _render_bench(report) -> None:  # noqa: ANN001 - BenchReport
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
    for cut, runtimes in dict.fromkeys((r.cut, r.predicted_for) for r in report.results if r.predicted_for):
        console.print(f"{cut}: predictions are for {runtimes}", highlight=False)
    verdict = "[green]within[/]" if report.passed else "[red]outside[/]"
    console.print(f"{verdict} the bounds: total {report.limits['total']:.0%}, each component {report.limits['component']:.0%}")


def _render_spec(study) -> None:  # noqa: ANN001 - SpecStudy
    from aiflow_cli.serve.studies.spec_study import PREDICTION_LIMIT

    ks = sorted({p.k for p in study.points if p.k != "auto"})
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
    overlaps = sorted({p.overlap for p in study.points})
    for overlap in overlaps:
        for k in [*ks, "auto"]:
            row = [f"{k}{' overlap' if overlap else ''}"]
            for base in study.baselines:
                p = next((q for q in study.points if q.link == base.link and q.k == k and q.overlap == overlap), None)
                row.append("-" if p is None else f"{p.tpot_ms:.1f} / {p.predicted_tpot_ms:.1f} ({100 * p.error:+.0f}%)")
            first = next((q for q in study.points if q.k == k and q.overlap == overlap), None)
            row += ["-" if first is None else f"{first.acceptance:.2f}",
                    f"{study.colocated_tpot_ms[k]:.1f}" if k in study.colocated_tpot_ms and not overlap else "-"]
            if first is not None:
                table.add_row(*row)
    table.add_row("server-only", *[f"{b.server_only_tpot_ms:.1f}" for b in study.baselines], "", "")
    show(table)
    itemised = [p for p in study.points if p.itemised]
    if itemised:
        parts = list(itemised[0].itemised)
        items = Table(title="ms per decode round, measured / cost model", title_style="bold")
        for col in ("link", "k", *parts):
            items.add_column(col, justify="left" if col == "link" else "right")
        for p in itemised:
            items.add_row(p.link, f"{p.k}{' overlap' if p.overlap else ''}",
                          *[f"{m:.1f} / {q:.1f}" if q else f"{m:.1f}" for m, q in p.itemised.values()])
        show(items)
    for base in study.baselines:
        best = study.best_k[base.link]
        point = next(q for q in study.points if q.link == base.link and q.k == best and not q.overlap)
        console.print(f"{base.link}: best k {best} at {point.tpot_ms / base.server_only_tpot_ms:.2f}x server-only; "
                      f"crossover k {study.crossover_k[base.link]}", highlight=False)
        if base.link in study.best_k_overlap:
            best = study.best_k_overlap[base.link]
            point = next(q for q in study.points if q.link == base.link and q.k == best and q.overlap)
            console.print(f"{base.link} with overlap: best k {best} at "
                          f"{point.tpot_ms / base.server_only_tpot_ms:.2f}x server-only", highlight=False)
    worst = max(abs(p.error) for p in study.points)
    console.print(("[green]within[/]" if worst <= PREDICTION_LIMIT else "[red]outside[/]")
                  + f" {PREDICTION_LIMIT:.0%} for every point (worst {worst:.0%})")


def _render_adapt(report) -> None:  # noqa: ANN001 - AdaptReport
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
