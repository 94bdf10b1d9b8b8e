"""``aiflow split``: choose where to cut MODEL for a device, server and link; export matched ONNX pairs.

Sub-commands: ``plan`` (the default: ``aiflow split MODEL ...``), ``bottleneck`` (a learned,
entropy-coded bottleneck at a cut), ``exits`` (early exits alone), ``verify`` (check an export),
``speculative`` (a draft / target pair). Each builds its settings and calls one library entry in
:mod:`aiflow_cli.api`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from typer.core import TyperGroup

from aiflow_cli.api.export import SpeculativeSettings, VerifySettings
from aiflow_cli.api.split import PlanSettings
from aiflow_cli.cli.bottleneck import bottleneck_cmd, exits_cmd
from aiflow_cli.cli.common import cli_errors, console, emit, err_console, fmt_bytes, progress_bar, show
from aiflow_cli.cli.options import (
    DirArg,
    JsonOpt,
    ModelArg,
    OutFileOpt,
    TrustRemoteCodeOpt,
    TrustSourceOpt,
    check_outputs,
    opt,
)

__all__ = ["app", "split_cmd", "verify_cmd", "speculative_cmd"]

DEPRECATED = {"--bottleneck": "bottleneck", "--exit": "exits"}  # old flag -> the sub-command that replaces it


class SplitGroup(TyperGroup):
    """``aiflow split MODEL ...`` plans and exports (the ``plan`` command, the default). A first
    argument that names no sub-command is a MODEL. The spellings of the previous release,
    ``split MODEL --bottleneck`` and ``split MODEL --exit C``, still work, with a deprecation line."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            verb = next((v for flag, v in DEPRECATED.items() if flag in args), "plan")
            if verb != "plan":
                err_console.print(f"[yellow]deprecated:[/] aiflow split MODEL {'--bottleneck' if verb == 'bottleneck' else '--exit C'} "
                                  f"is now aiflow split {verb} MODEL ...; the old spelling goes in the next release",
                                  highlight=False, soft_wrap=True)
            args = [verb, *(a for a in args if a != "--bottleneck")]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=SplitGroup, no_args_is_help=True, add_completion=False,
                  help="Choose where to cut MODEL for a device, a server and a link, and export the halves "
                       "(aiflow split MODEL ...); train a learned bottleneck (aiflow split bottleneck MODEL); measure "
                       "early exits (aiflow split exits MODEL); check an export (aiflow split verify DIR); export a "
                       "draft on the device and a target on the server for speculative decoding (aiflow split "
                       "speculative).")

app.command("bottleneck")(bottleneck_cmd)
app.command("exits")(exits_cmd)

P, D = PlanSettings, PlanSettings.defaults()


@app.command("plan")
@cli_errors
def split_cmd(
    model: ModelArg,
    device: Annotated[Optional[Path], opt(P, "device")] = D.device,
    server: Annotated[Optional[Path], opt(P, "server")] = D.server,
    link: Annotated[Optional[list[Path]], opt(P, "link")] = None,
    bandwidth: Annotated[Optional[str], opt(P, "bandwidth")] = D.bandwidth,
    rtt: Annotated[Optional[str], opt(P, "rtt")] = D.rtt,
    codec: Annotated[str, opt(P, "codec")] = D.codec,
    profile: Annotated[Optional[Path], opt(P, "profile")] = D.profile,
    device_runtime: Annotated[Optional[str], opt(P, "device_runtime")] = D.device_runtime,
    server_runtime: Annotated[Optional[str], opt(P, "server_runtime")] = D.server_runtime,
    server_batch: Annotated[Optional[str], opt(P, "server_batch")] = None,
    requests_per_device: Annotated[float, opt(P, "requests_per_device")] = D.requests_per_device,
    sensitivity: Annotated[bool, opt(P, "sensitivity")] = D.sensitivity,
    cut: Annotated[Optional[list[str]], opt(P, "cut")] = None,
    export: Annotated[Optional[Path], opt(P, "export")] = D.export,
    force: Annotated[bool, opt(P, "force")] = D.force,
    exporter: Annotated[str, opt(P, "exporter")] = D.exporter,
    triton: Annotated[bool, opt(P, "triton", "--triton/--no-triton")] = D.triton,
    verify_count: Annotated[int, opt(P, "verify_count")] = D.verify_count,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="PNG: stacked device/transfer/server bars per link.")] = None,
    top: Annotated[int, typer.Option("--top", help="Rows per link in the ranked table.")] = 8,
    wide: Annotated[bool, typer.Option("--wide", help="Show every column of the tables (needs a wide terminal).")] = False,
    out: OutFileOpt = None,
    as_json: JsonOpt = False,
    trust_remote_code: TrustRemoteCodeOpt = D.trust_remote_code,
) -> None:
    """Choose where to cut MODEL for a device, a server and a link, and export the halves.

    Ranks every cut (and device-only / server-only) by predicted latency per request: device time +
    encode + bytes / rate + RTT + server time + decode + result / rate. Prints the best cut per link
    and the link rates at which the best cut changes. With --export, writes verified device.onnx /
    server.onnx pairs and manifest.json (check them later with aiflow split verify DIR).
    """
    from aiflow_cli.api.split import plan
    from aiflow_cli.split.plot import plot_plan

    settings = P.from_options(locals())
    check_outputs(out, plot)
    with progress_bar() as progress:
        outcome = plan(settings, progress)
    result, manifest = outcome.result, outcome.manifest
    if result is not None:
        emit(result.plan.model_dump_json(indent=2), out, False, plot, lambda path: plot_plan(result.plan, path))
    if as_json:
        import json

        typer.echo(json.dumps({"plan": result.plan.model_dump(mode="json") if result else None,
                               "manifest": manifest.model_dump(mode="json") if manifest else None}, indent=2))
        return
    if result is not None:
        _render_plan(result, top, wide)
    if manifest is not None:
        _render_manifest(manifest, export)
    for path in (out, plot) if result is not None else ():
        if path is not None:
            console.print(f"wrote {path}")


def _node(node) -> str:  # noqa: ANN001 - NodeInfo
    assumed = ", [yellow]assumed figures[/]" if node.runtime_assumed else ""
    return f"{node.name} ([italic]{node.source}[/], {node.runtime}{assumed})"


def _render_plan(result, top: int, wide: bool) -> None:  # noqa: ANN001
    plan = result.plan
    codecs = {c.cut: c for c in result.codecs}
    console.print(f"[bold]{plan.model}[/]  device: {_node(plan.device)}  server: {_node(plan.server)}  "
                  f"codec: {plan.codec}", highlight=False)
    for lp in plan.links:
        table = Table(title=f"{lp.name}: {fmt_bytes(lp.rate_bytes_per_s)}/s up, RTT {lp.rtt_ms:g} ms", title_style="bold",
                      caption=None if wide else "link = encode + transfer + RTT + decode; --wide shows each")
        cols = (("#", "cut", "device ms", "enc ms", "transfer ms", "RTT ms", "server ms", "dec ms", "total ms", "bytes",
                 "agreement") if wide else ("#", "cut", "device ms", "link ms", "server ms", "total ms", "bytes"))
        for col in cols:
            table.add_column(col, justify="left" if col == "cut" else "right")
        shown = [c for i, c in enumerate(lp.candidates) if i < top or c.cut in ("device-only", "server-only")]
        for c in shown:
            rank = lp.candidates.index(c) + 1
            agreement = codecs[c.cut].agreement if c.cut in codecs else None
            if wide:
                cells = [f"{c.device_ms:.2f}", f"{c.encode_ms:.2f}", f"{c.transfer_ms:.2f}", f"{c.rtt_ms:g}",
                         f"{c.server_ms:.2f}", f"{c.decode_ms:.2f}", f"{c.total_ms:.2f}", fmt_bytes(c.bytes),
                         "-" if agreement is None else f"{agreement:.3f}"]
            else:
                link = c.encode_ms + c.transfer_ms + c.rtt_ms + c.decode_ms
                cells = [f"{c.device_ms:.2f}", f"{link:.2f}", f"{c.server_ms:.2f}", f"{c.total_ms:.2f}",
                         fmt_bytes(c.bytes)]
            table.add_row(str(rank), c.cut, *cells, style="bold green" if rank == 1 else None)
        show(table)
    summary = Table(title="best cut per link", title_style="bold")
    for col in ("link", "best", "total ms", "vs device-only", "vs server-only"):
        summary.add_column(col)
    for lp in plan.links:
        by = {c.cut: c.total_ms for c in lp.candidates}
        best = lp.candidates[0].total_ms
        summary.add_row(lp.name, lp.best_cut, f"{best:.2f}", f"{by['device-only'] / best:.2f}x",
                        f"{by['server-only'] / best:.2f}x")
    show(summary)
    rows = Table(title=f"plan table (RTT {plan.plan_table_rtt_ms:g} ms): switch cuts as the link changes",
                 title_style="bold")
    for col in ("from rate", "to rate", "cut"):
        rows.add_column(col)
    for r in plan.plan_table:
        rows.add_row(f"{fmt_bytes(r.min_rate_bytes_per_s)}/s", f"{fmt_bytes(r.max_rate_bytes_per_s)}/s", r.cut)
    show(rows)
    for cap in plan.capacity:
        _render_capacity(cap, plan.server.name)
    for sens in plan.sensitivity:
        _render_sensitivity(sens, plan)
    if plan.sensitivity == [] and (plan.device.runtime_assumed or plan.server.runtime_assumed):
        console.print("[yellow]note:[/] some per-kernel figures are assumed; --sensitivity shows the cut choice if "
                      "they are off by up to 4x", highlight=False)


def _render_capacity(cap, server: str) -> None:  # noqa: ANN001 - ServerCapacity
    table = Table(title=f"{server}, server half after {cap.cut} ({cap.runtime}, projected): devices at "
                        f"{cap.requests_per_device_per_s:g} requests/s each", title_style="bold",
                  caption="server ms: one batch through the server half, not counting the wait to fill it")
    for col in ("batch", "server ms", "requests/s", "devices", "fits memory"):
        table.add_column(col, justify="right")
    for p in cap.points:
        fits = "-" if p.fits_memory is None else ("yes" if p.fits_memory else "[red]no[/]")
        table.add_row(str(p.batch), f"{p.server_ms:.3f}", f"{p.requests_per_s:,.0f}", f"{p.devices:,}", fits)
    show(table)


def _render_sensitivity(sens, plan) -> None:  # noqa: ANN001 - Sensitivity, SplitPlan
    node = plan.device if sens.side == "device" else plan.server
    table = Table(title=f"sensitivity: {node.name}'s {sens.runtime} per-kernel figures (assumed) x factor",
                  title_style="bold", caption=f"plan: best cut by uplink rate at RTT {plan.plan_table_rtt_ms:g} ms")
    table.add_column("x", justify="right")
    for lp in plan.links:
        table.add_column(lp.name)
    table.add_column("plan")
    for row in sens.rows:
        steps = [row.plan_table[0].cut] + [f"{fmt_bytes(r.min_rate_bytes_per_s)}/s {r.cut}" for r in row.plan_table[1:]]
        table.add_row(f"{row.factor:g}", *[row.best_cut[lp.name] for lp in plan.links], " > ".join(steps))
    show(table)


def _render_manifest(manifest, export: Path | None, title: str = "exported to") -> None:  # noqa: ANN001
    table = Table(title=f"{title} {export}", title_style="bold")
    for col in ("cut", "codec", "device.onnx", "server.onnx", "crossing", "verified on", "against", "max diff",
                "agreement"):
        table.add_column(col)
    fallbacks = []
    for p in manifest.pairs:
        v = p.verification
        crossing = ", ".join(f"{d.name} {d.dtype}{d.shape}" for d in p.crossing)
        agreement = v.agreement if v.agreement is not None else v.mean_cosine
        table.add_row(p.cut, p.codec.name, fmt_bytes(p.device.size_bytes), fmt_bytes(p.server.size_bytes), crossing,
                      v.inputs, v.reference, f"{v.max_abs_diff:.2e}", "-" if agreement is None else f"{agreement:.4f}")
        fallbacks += [f"{p.cut} {side}.onnx: {art.exporter}" for side, art in (("device", p.device), ("server", p.server))
                      if art.exporter and art.exporter != "dynamo"]
    show(table)
    exporters = sorted({a.exporter for p in manifest.pairs for a in (p.device, p.server) if a.exporter})
    if exporters == ["dynamo"]:
        console.print("exported with torch.onnx's dynamo exporter")
    for line in fallbacks:
        console.print(f"[yellow]exported by {line}[/yellow]" if "dynamo failed" in line else f"exported by {line}")


V, VD = VerifySettings, VerifySettings.defaults()


@app.command("verify")
@cli_errors
def verify_cmd(
    directory: DirArg,
    verify_count: Annotated[int, opt(V, "verify_count")] = VD.verify_count,
    trust_remote_code: TrustRemoteCodeOpt = VD.trust_remote_code,
    trust_source: TrustSourceOpt = VD.trust_source,
    as_json: JsonOpt = False,
) -> None:
    """Check an export: the manifest's schema, every path, size and sha256, every declared tensor against
    the ONNX graphs, the source model's weights and cuts, then every pair re-run against its reference.

    Exit 2 names the first field that does not match; exit 3 means a pair does not reproduce its
    reference (the unsplit model; for a learned bottleneck, its training graph).
    """
    from aiflow_cli.api.export import verify_export

    settings = V.from_options(locals())
    with console.status(f"verifying {directory}"):
        manifest = verify_export(settings)
    if as_json:
        typer.echo(manifest.model_dump_json(indent=2))
        return
    _render_manifest(manifest, directory, "verified")
    against = "; ".join(dict.fromkeys(p.verification.reference for p in manifest.pairs))
    for p in manifest.pairs:
        if p.verification.flips:
            console.print(f"{p.cut}: {p.verification.flips} prompt(s) left the target's own output at a near-tie "
                          f"(int8 compute; token agreement {p.verification.agreement:.3f}): counted, not refused",
                          highlight=False)
    console.print(f"[green]ok[/]: {len(manifest.pairs)} pair(s) match the manifest's hashes and declarations, and "
                  f"reproduce {against}", highlight=False)


S, SD = SpeculativeSettings, SpeculativeSettings.defaults()


@app.command("speculative")
@cli_errors
def speculative_cmd(
    draft: Annotated[str, opt(S, "draft")],
    target: Annotated[str, opt(S, "target")],
    export: Annotated[Path, opt(S, "export")],
    weights: Annotated[str, opt(S, "weights")] = SD.weights,
    draft_weights: Annotated[Optional[str], opt(S, "draft_weights")] = SD.draft_weights,
    force: Annotated[bool, opt(S, "force")] = SD.force,
    exporter: Annotated[str, opt(S, "exporter")] = SD.exporter,
    trust_remote_code: TrustRemoteCodeOpt = SD.trust_remote_code,
    as_json: JsonOpt = False,
) -> None:
    """Export a draft / target pair for speculative decoding across the link: the device drafts k tokens,
    the server verifies them in one pass (aiflow serve-pair generate DIR runs it).

    Both get a KV cache. Refused when the vocabularies differ. Nothing is written unless speculative
    greedy decoding through both graphs reproduces the target's own greedy output token for token.
    """
    from aiflow_cli.api.export import export_speculative

    settings = S.from_options(locals())
    with progress_bar(not as_json) as progress:
        manifest = export_speculative(settings, progress)
    if as_json:
        typer.echo(manifest.model_dump_json(indent=2))
        return
    pair, info = manifest.pairs[0], manifest.speculative
    v = pair.verification
    check = "token-identical" if not v.flips else (f"{v.flips} prompt(s) left the target's output at a near-tie "
                                                    f"(int8 compute; agreement {v.agreement:.3f}), counted")
    console.print(f"[green]exported[/] {export}: draft {fmt_bytes(pair.device.size_bytes)} (device), target "
                  f"{fmt_bytes(pair.server.size_bytes)} (server), {info.vocab_size:,} tokens, context "
                  f"{info.max_positions:,}; {v.inputs}: {check}", highlight=False)

