"""``aiflow split --bottleneck``: render the learned-bottleneck run (the library does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from aiflow_cli.cli.common import console, progress_bar, show
from aiflow_cli.errors import InputError
from aiflow_cli.schemas.text_bottleneck import TextBottleneckReport

__all__ = ["bottleneck_cmd", "exits_cmd"]


def bottleneck_cmd(model: str, cuts: list[str], beta: Optional[str], data: Optional[list[Path]], auto: bool, max_drop: float,
                   exits: list[str], finetune_server: bool, epochs: int, patch: int, jpeg_quality: str, wide: bool,
                   device: Optional[Path],
                   server: Optional[Path], link: list[Path], bandwidth: Optional[str], rtt: Optional[str],
                   profile: Optional[Path], export: Optional[Path], force: bool, plot: Optional[Path],
                   out: Optional[Path], as_json: bool, augment: int = 0, target_bytes: Optional[float] = None,
                   refine: Optional[int] = None, min_fidelity: Optional[float] = None,
                   exporter: str = "dynamo", shrinkage: float = 0.2) -> None:
    from aiflow_cli.atomic import check_writable, write_text_atomic
    from aiflow_cli.jobs.bottleneck import bottleneck_split

    if epochs < 0:
        raise InputError(f"--epochs must be 0 or more, got {epochs}", "for example --epochs 4")
    if patch not in (1, 2, 3, 4):
        raise InputError(f"--patch must be 1, 2, 3 or 4, got {patch}", "for example --patch 3")
    if auto and (device is None or not (link or bandwidth)):
        raise InputError("--auto needs --device, --server and a link to predict latency",
                         "add --device D --server S --bandwidth 1MB/s --rtt 20ms (or --link FILE)")
    for path in (out, plot):
        if path is not None:
            check_writable(path)
    with progress_bar(not as_json) as progress:
        outcome = bottleneck_split(model, cuts, beta, data, max_drop=max_drop, exits=exits,
                                   finetune_server=finetune_server, epochs=epochs, patch=patch, shrinkage=shrinkage,
                                   jpeg_qualities=jpeg_quality, device=device, server=server,
                                   link=link, bandwidth=bandwidth, rtt=rtt, host_profile=profile,
                                   export_dir=export, force=force, progress=progress, augment=augment,
                                   target_bytes=target_bytes, refine=refine, min_fidelity=min_fidelity,
                                   exporter=exporter)
    report = outcome.report
    if out is not None:
        write_text_atomic(out, report.model_dump_json(indent=2) + "\n")
    text = isinstance(report, TextBottleneckReport)
    if plot is not None:
        from aiflow_cli.split.bottleneck.plot import plot_rate_accuracy, plot_text_rate

        (plot_text_rate if text else plot_rate_accuracy)(report, plot)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    (_render_text if text else _render)(report, wide)
    if outcome.manifest is not None:
        pair = outcome.manifest.pairs[0]
        console.print(f"exported {pair.cut} (beta {outcome.exported_beta:g}) to {export}: agreement with "
                      f"{pair.verification.reference} {pair.verification.agreement:.3f}; check later with: "
                      f"aiflow split verify {export}")
    for path in (out, plot):
        if path is not None:
            console.print(f"wrote {path}")


def exits_cmd(model: str, exits: list[str], max_drop: float, data: Optional[list[Path]], out: Optional[Path],
              as_json: bool) -> None:
    from aiflow_cli.atomic import check_writable, write_text_atomic
    from aiflow_cli.jobs.bottleneck import exits_only

    if out is not None:
        check_writable(out)
    with progress_bar(not as_json) as progress:
        report = exits_only(model, exits, max_drop, data, progress=progress)
    if out is not None:
        write_text_atomic(out, report.model_dump_json(indent=2) + "\n")
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    what = "next-token top-1" if "wikitext" in " ".join(report.data.roots) else "top-1"
    console.print(f"[bold]{report.model}[/]  full model {what} {fmt_share(report.reference_test)} on "
                  f"{report.data.test_inputs} test inputs; {report.data.rule}", highlight=False)
    _render_exits(report)
    if out is not None:
        console.print(f"wrote {out}")


def fmt_share(s) -> str:  # noqa: ANN001 - Share
    return f"{s.value:.3f} [{s.ci95[0]:.3f}, {s.ci95[1]:.3f}]"


def fmt_drop(d) -> str:  # noqa: ANN001 - Drop
    return f"{d.points:+.1f} [{d.ci95[0]:+.1f}, {d.ci95[1]:+.1f}]"


def _render_exits(report) -> None:  # noqa: ANN001
    ex = Table(title=f"early exits (threshold chosen on validation for <= {report.max_drop:g} point drop; test, 95% CI)",
               title_style="bold")
    for col in ("exit at", "threshold", "exit rate", "top-1 with exit", "drop (points)", "compute saved"):
        ex.add_column(col, justify="right")
    for e in report.exits:
        ex.add_row(e.cut, f"{e.threshold:.2f}", f"{e.exit_rate.value:.1%}", fmt_share(e.test.top1), fmt_drop(e.test.drop),
                   f"{e.compute_saved:.1%}")
    show(ex)


def _fmt_choice(p) -> str:  # noqa: ANN001 - RatePoint
    se = p.choice.se
    return f"{p.choice_drop:+.1f}" + ("" if se is None else f" ±{se:.1f}")


def _render(report, wide: bool = False) -> None:  # noqa: ANN001
    d = report.data
    augmented = f" + {d.augmented_inputs} augmented views" if d.augmented_inputs else ""
    console.print(f"[bold]{report.model}[/]  unsplit top-1 {fmt_share(report.reference_test)} on {d.test_inputs} test "
                  f"images; choices on {d.validation_inputs} validation images; trained on {d.train_inputs} inputs"
                  f"{augmented} ({d.rule})", highlight=False)
    jpeg90 = next((b.bytes_per_input for b in report.baselines if b.name == "jpeg-q90"), None)
    table = Table(title="learned bottleneck: rate vs accuracy (test, 95% CI)", title_style="bold",
                  caption="choice drop: the drop on the training inputs and validation together, +- one standard "
                          "error; the operating point is the fewest bytes whose drop, one standard error up, is within "
                          f"{report.max_drop:g} point"
                          + ("; uniform: bytes the uniform baseline needs for the same test agreement" if wide
                             else "; --wide: top-1, agreement, uniform"))
    cols = (("cut", "beta", "bytes", "top-1", "drop (points)", "choice drop", "agree", "uniform", "JPEG q90/") if wide
            else ("cut", "beta", "bytes", "test drop (points)", "choice drop", "JPEG q90/"))
    for col in cols:
        table.add_column(col, justify="left" if col == "cut" else "right")
    for p in report.points:
        uni = p.uniform_bytes_at_equal_agreement
        jpeg = "-" if jpeg90 is None else f"{jpeg90 / p.bytes_per_input:.1f}x"
        if wide:
            table.add_row(p.cut, f"{p.beta:g}", f"{p.bytes_per_input:,.0f}", fmt_share(p.test.top1),
                          fmt_drop(p.test.drop), _fmt_choice(p), f"{p.test.agreement.value:.3f}",
                          "-" if uni is None else f"{p.bytes_per_input / uni:.2f}x", jpeg)
        else:
            table.add_row(p.cut, f"{p.beta:g}", f"{p.bytes_per_input:,.0f}", fmt_drop(p.test.drop),
                          _fmt_choice(p), jpeg)
    show(table)
    op = report.operating_point
    if op is not None:
        verdict = "supports" if op.test_supports_max_drop else "does not support"
        rule = (f"most accurate within {op.target_bytes:,.0f} B" if op.target_bytes
                 else f"fewest bytes within {report.max_drop:g} point"
                 + (f", {op.choice_z:g} standard error up ({op.choice_bound:+.1f})" if op.choice_bound is not None
                    else ""))
        where = "training inputs + validation" if op.chosen_on == "train+validation" else "validation"
        console.print(f"operating point (chosen on {where}: {rule}): {op.cut}, beta {op.beta:g}: "
                      f"{op.test_bytes_per_input:,.0f} B, test drop {fmt_drop(op.test_drop)} points; the test interval "
                      f"{verdict} 'within {report.max_drop:g} point'", highlight=False)
    if report.links:
        lat = Table(title="predicted latency per request (ms, no exit)", title_style="bold")
        for col in ("cut", "beta", *report.links):
            lat.add_column(col, justify="left" if col == "cut" else "right")
        for p in report.points:
            lat.add_row(p.cut, f"{p.beta:g}", *[f"{p.latency_ms[name]:.1f}" for name in report.links])
        show(lat)
    if report.baselines:
        base = Table(title="baselines (same test images)", title_style="bold")
        for col in ("name", "bytes", *(("top-1",) if wide else ()), "drop (points)", "agreement"):
            base.add_column(col, justify="left" if col == "name" else "right")
        for b in report.baselines:
            base.add_row(b.name, f"{b.bytes_per_input:,.0f}", *((fmt_share(b.test.top1),) if wide else ()),
                         fmt_drop(b.test.drop), f"{b.test.agreement.value:.3f}")
        show(base)
    if report.exits:
        _render_exits(report)
    if report.chosen:
        ch = Table(title=f"--auto: fastest plan per link within {report.max_drop:g} point(s) on validation",
                   title_style="bold")
        for col in ("link", "cut", "beta", "exit", "bytes", "val drop", "test drop", "expected ms"):
            ch.add_column(col)
        for c in report.chosen:
            ch.add_row(c.link, c.cut, "-" if c.beta is None else f"{c.beta:g}", c.exit or "-",
                       f"{c.bytes_per_input:,.0f}", f"{c.validation_drop:+.1f}",
                       "-" if c.test_drop is None else fmt_drop(c.test_drop), f"{c.expected_latency_ms:.1f}")
        show(ch)


def fmt_mean(m) -> str:  # noqa: ANN001 - Mean
    return f"{m.value:.4f} [{m.ci95[0]:.4f}, {m.ci95[1]:.4f}]"


def _render_text(report: TextBottleneckReport, wide: bool = False) -> None:
    d = report.data
    unit = "windows" if report.task == "next-token" else "sentences"
    console.print(f"[bold]{report.model}[/] at {report.cut} (hidden size {report.hidden_size}): fidelity = "
                  f"{report.fidelity}; test {d.test_inputs} {unit} ({report.test_tokens:,} tokens), choices on "
                  f"{d.validation_inputs} validation {unit}, trained on {report.train_tokens:,} tokens ({d.rule})",
                  highlight=False)
    table = Table(title="bytes per token vs fidelity (test, 95% CI over " + unit + ")", title_style="bold",
                  caption="val: the validation fidelity the choice is made on")
    cols = ("codec", "bytes/token", "fidelity", "val", *(("KL nats/token",) if report.task == "next-token" else
                                                        ("worst cos",)))
    for col in cols:
        table.add_column(col, justify="left" if col == "codec" else "right")
    for p in [*report.points, *report.baselines]:
        name = f"learned beta {p.beta:g}" if p.codec == "learned" else p.codec
        extra = p.test.kl if report.task == "next-token" else p.test.worst
        table.add_row(name, f"{p.bytes_per_token:,.1f}", fmt_mean(p.test.fidelity), f"{p.validation.fidelity.value:.4f}",
                      "-" if extra is None else f"{extra:.4f}")
    show(table)
    op = report.operating_point
    if op is None:
        return
    rule = "fewest bytes whose validation interval stays at or above" if op.meets_min_fidelity_on_validation else \
        "no beta kept its validation interval at or above; the most faithful was taken for"
    uniform = ("" if op.uniform_bytes_at_equal_fidelity is None else
               f"; the uniform quantiser needs {op.uniform_bytes_at_equal_fidelity:,.1f} B/token for the same "
               f"test fidelity ({op.test_bytes_per_token / op.uniform_bytes_at_equal_fidelity:.2f}x)")
    console.print(f"operating point (chosen on validation: {rule} {report.min_fidelity:g}): beta {op.beta:g}, "
                  f"{op.test_bytes_per_token:,.1f} B/token at test fidelity {fmt_mean(op.test_fidelity)}; "
                  f"{op.ratio_to_int8_zstd:.2f}x int8+zstd ({op.int8_zstd_bytes_per_token:,.1f}), "
                  f"{op.test_bytes_per_token / op.fp16_bytes_per_token:.2f}x fp16{uniform}", highlight=False)
