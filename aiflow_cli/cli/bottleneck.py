"""``aiflow split --bottleneck``: render the learned-bottleneck run (the library does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from aiflow_cli.cli.common import console, progress_bar
from aiflow_cli.errors import InputError

__all__ = ["bottleneck_cmd", "exits_cmd"]


def bottleneck_cmd(model: str, cuts: list[str], beta: str, data: Optional[Path], auto: bool, max_drop: float,
                   exits: list[str], finetune_server: bool, epochs: int, patch: int, device: Optional[Path],
                   server: Optional[Path], link: list[Path], bandwidth: Optional[str], rtt: Optional[str],
                   profile: Optional[Path], export: Optional[Path], force: bool, plot: Optional[Path],
                   out: Optional[Path], as_json: bool) -> None:
    from aiflow_cli.atomic import check_writable, write_text_atomic
    from aiflow_cli.split.bottleneck.run import bottleneck_split

    if epochs < 0:
        raise InputError(f"--epochs must be 0 or more, got {epochs}", "for example --epochs 4")
    if patch not in (1, 2, 3, 4):
        raise InputError(f"--patch must be 1, 2, 3 or 4, got {patch}", "for example --patch 2")
    if auto and (device is None or not (link or bandwidth)):
        raise InputError("--auto needs --device, --server and a link to predict latency",
                         "add --device D --server S --bandwidth 1MB/s --rtt 20ms (or --link FILE)")
    for path in (out, plot):
        if path is not None:
            check_writable(path)
    with progress_bar(not as_json) as progress:
        outcome = bottleneck_split(model, cuts, beta, data, max_drop=max_drop, exits=exits,
                                   finetune_server=finetune_server, epochs=epochs, patch=patch, device=device, server=server,
                                   link=link, bandwidth=bandwidth, rtt=rtt, host_profile=profile,
                                   export_dir=export, force=force, progress=progress)
    report = outcome.report
    if out is not None:
        write_text_atomic(out, report.model_dump_json(indent=2) + "\n")
    if plot is not None:
        from aiflow_cli.split.bottleneck.plot import plot_rate_accuracy

        plot_rate_accuracy(report, plot)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    _render(report)
    if outcome.manifest is not None:
        pair = outcome.manifest.pairs[0]
        console.print(f"exported {pair.cut} (beta {outcome.exported_beta:g}) to {export}: training-graph agreement "
                      f"{pair.verification.agreement:.3f}; check later with: aiflow split verify {export}")
    for path in (out, plot):
        if path is not None:
            console.print(f"wrote {path}")


def exits_cmd(model: str, exits: list[str], max_drop: float, data: Optional[Path], out: Optional[Path],
              as_json: bool) -> None:
    from aiflow_cli.atomic import check_writable, write_text_atomic
    from aiflow_cli.split.bottleneck.run import exits_only

    if out is not None:
        check_writable(out)
    with progress_bar(not as_json) as progress:
        report = exits_only(model, exits, max_drop, data, progress=progress)
    if out is not None:
        write_text_atomic(out, report.model_dump_json(indent=2) + "\n")
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    what = "next-token top-1" if "wikitext" in report.data else "top-1"
    console.print(f"[bold]{report.model}[/]  full model {what} {report.reference_metric:.3f} on "
                  f"{report.eval_inputs} evaluation inputs")
    _render_exits(report)
    if out is not None:
        console.print(f"wrote {out}")


def _render_exits(report) -> None:  # noqa: ANN001
    ex = Table(title=f"early exits (threshold calibrated for <= {report.max_drop:g} point drop)", title_style="bold")
    for col in ("exit at", "threshold", "exit rate", "exit top-1", "top-1", "drop", "compute saved"):
        ex.add_column(col, justify="right")
    for e in report.exits:
        ex.add_row(e.cut, f"{e.threshold:.2f}", f"{e.exit_rate:.1%}", f"{e.exit_accuracy:.3f}", f"{e.metric:.3f}",
                   f"{e.drop:+.1f}", f"{e.compute_saved:.1%}")
    console.print(ex)


def _render(report) -> None:  # noqa: ANN001
    ref = report.reference_metric
    console.print(f"[bold]{report.model}[/]  unsplit top-1 {ref:.3f} on {report.eval_inputs} evaluation images "
                  f"(trained on {report.train_inputs} training-split inputs)")
    jpeg90 = next((b.bytes_per_input for b in report.baselines if b.name == "jpeg-q90"), None)
    table = Table(title="learned bottleneck: rate vs accuracy (evaluation split)", title_style="bold",
                  caption="coded/est: range-coded bytes (header excluded) / -log2 p; uniform: bytes the "
                          "uniform baseline needs for the same agreement")
    cols = ["cut", "beta", "bytes", "coded/est", "top-1", "drop", "agree", "uniform", "JPEG q90/", "train s"]
    for col in cols:
        table.add_column(col, justify="left" if col == "cut" else "right")
    for p in report.points:
        uni = p.uniform_bytes_at_equal_agreement
        table.add_row(p.cut, f"{p.beta:g}", f"{p.bytes_per_input:,.0f}",
                      f"{(p.bytes_per_input - 8) / max(p.estimated_bytes_per_input, 1e-9):.3f}", f"{p.metric:.3f}",
                      f"{100 * (ref - p.metric):+.1f}", f"{p.agreement:.3f}",
                      "-" if uni is None else f"{uni:,.0f} ({p.bytes_per_input / uni:.2f}x)",
                      "-" if jpeg90 is None else f"{jpeg90 / p.bytes_per_input:.1f}x",
                      f"{p.train_seconds:.0f}")
    console.print(table)
    if report.links:
        lat = Table(title="predicted latency per request (ms, no exit)", title_style="bold")
        for col in ("cut", "beta", *report.links):
            lat.add_column(col, justify="left" if col == "cut" else "right")
        for p in report.points:
            lat.add_row(p.cut, f"{p.beta:g}", *[f"{p.latency_ms[name]:.1f}" for name in report.links])
        console.print(lat)
    if report.baselines:
        base = Table(title="baselines (same evaluation split)", title_style="bold")
        for col in ("name", "bytes", "top-1", "agreement"):
            base.add_column(col, justify="left" if col == "name" else "right")
        for b in report.baselines:
            base.add_row(b.name, f"{b.bytes_per_input:,.0f}", f"{b.metric:.3f}", f"{b.agreement:.3f}")
        console.print(base)
    if report.exits:
        _render_exits(report)
    if report.chosen:
        ch = Table(title=f"--auto: fastest plan per link within {report.max_drop:g} point(s)", title_style="bold")
        for col in ("link", "cut", "beta", "exit", "bytes", "top-1", "drop", "expected ms"):
            ch.add_column(col)
        for c in report.chosen:
            ch.add_row(c.link, c.cut, "-" if c.beta is None else f"{c.beta:g}", c.exit or "-", f"{c.bytes_per_input:,.0f}", f"{c.metric:.3f}",
                       f"{c.drop:+.1f}", f"{c.expected_latency_ms:.1f}")
        console.print(ch)
