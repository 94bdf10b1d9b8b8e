"""``aiflow split bottleneck`` and ``aiflow split exits``: build the settings, call the library, render."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from aiflow_cli.api.bottleneck import BottleneckSettings, ExitsSettings
from aiflow_cli.cli.common import cli_errors, console, emit, progress_bar, show
from aiflow_cli.cli.options import JsonOpt, ModelArg, OutFileOpt, check_outputs, opt
from aiflow_cli.schemas.text_bottleneck import TextBottleneckReport

__all__ = ["bottleneck_cmd", "exits_cmd"]

B, D = BottleneckSettings, BottleneckSettings.defaults()
E, ED = ExitsSettings, ExitsSettings.defaults()


@cli_errors
def bottleneck_cmd(
    model: ModelArg,
    cut: Annotated[Optional[list[str]], opt(B, "cut")] = None,
    beta: Annotated[Optional[str], opt(B, "beta")] = None,
    data: Annotated[Optional[list[Path]], opt(B, "data")] = D.data,
    max_drop: Annotated[float, opt(B, "max_drop")] = D.max_drop,
    exits: Annotated[Optional[list[str]], opt(B, "exits", help=B.help("exits") + " Planned and exported with the "
                                                  "bottleneck.")] = None,
    min_fidelity: Annotated[Optional[float], opt(B, "min_fidelity")] = D.min_fidelity,
    auto: Annotated[bool, opt(B, "auto")] = D.auto,
    jpeg_quality: Annotated[str, opt(B, "jpeg_quality")] = ",".join(map(str, D.jpeg_quality)),
    finetune_server: Annotated[bool, opt(B, "finetune_server")] = D.finetune_server,
    epochs: Annotated[int, opt(B, "epochs")] = D.epochs,
    augment: Annotated[int, opt(B, "augment")] = D.augment,
    target_bytes: Annotated[Optional[float], opt(B, "target_bytes")] = D.target_bytes,
    refine: Annotated[Optional[int], opt(B, "refine")] = D.refine,
    patch: Annotated[int, opt(B, "patch")] = D.patch,
    shrinkage: Annotated[float, opt(B, "shrinkage")] = D.shrinkage,
    device: Annotated[Optional[Path], opt(B, "device")] = D.device,
    server: Annotated[Optional[Path], opt(B, "server")] = D.server,
    link: Annotated[Optional[list[Path]], opt(B, "link")] = None,
    bandwidth: Annotated[Optional[str], opt(B, "bandwidth")] = D.bandwidth,
    rtt: Annotated[Optional[str], opt(B, "rtt")] = D.rtt,
    profile: Annotated[Optional[Path], opt(B, "profile")] = D.profile,
    export: Annotated[Optional[Path], opt(B, "export")] = D.export,
    force: Annotated[bool, opt(B, "force")] = D.force,
    exporter: Annotated[str, opt(B, "exporter")] = D.exporter,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="PNG: rate-accuracy curves.")] = None,
    wide: Annotated[bool, typer.Option("--wide", help="Show every column of the tables (needs a wide terminal).")] = False,
    out: OutFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a learned, entropy-coded bottleneck at --cut for each --beta and compare it with JPEG upload and
    the non-learned codecs.

    Image classifiers: a task-aware transform, a learned density and real range coding, trained on
    the training split of --data and reported on its test split (95% intervals); the operating
    point is chosen without test figures; --export writes its pair. Causal LMs and sentence
    encoders (e.g. zoo:smollm2-135m --cut layer15): each token's hidden state is coded and compared,
    in bytes per token, with fp16, int8+zstd and a uniform quantiser on WikiText-2.
    """
    from aiflow_cli.api.bottleneck import train_bottleneck

    settings = B.from_options(locals())
    check_outputs(out, plot)
    with progress_bar(not as_json) as progress:
        outcome = train_bottleneck(settings, progress)
    report = outcome.report
    text = isinstance(report, TextBottleneckReport)
    from aiflow_cli.split.bottleneck.plot import plot_rate_accuracy, plot_text_rate

    draw = plot_text_rate if text else plot_rate_accuracy
    if emit(report.model_dump_json(indent=2), out, as_json, plot, lambda path: draw(report, path)):
        return
    (_render_text if text else _render)(report, wide)
    _render_written(outcome, export, out, plot)


def _render_written(outcome, export: Optional[Path], *paths: Optional[Path]) -> None:  # noqa: ANN001
    if outcome.manifest is not None:
        pair = outcome.manifest.pairs[0]
        console.print(f"exported {pair.cut} (beta {outcome.exported_beta:g}) to {export}: agreement with "
                      f"{pair.verification.reference} {pair.verification.agreement:.3f}; check later with: "
                      f"aiflow split verify {export}")
    for path in paths:
        if path is not None:
            console.print(f"wrote {path}")


@cli_errors
def exits_cmd(
    model: ModelArg,
    exits: Annotated[Optional[list[str]], opt(E, "exits")] = None,
    max_drop: Annotated[float, opt(E, "max_drop")] = ED.max_drop,
    data: Annotated[Optional[list[Path]], opt(E, "data")] = ED.data,
    out: OutFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure early-exit heads at each --exit: image classifiers on --data, causal LMs on WikiText-2; the
    threshold is chosen on validation for at most --max-drop points, the figures are on test."""
    from aiflow_cli.api.bottleneck import measure_exits

    settings = E.from_options(locals())
    check_outputs(out)
    with progress_bar(not as_json) as progress:
        report = measure_exits(settings, progress)
    if emit(report.model_dump_json(indent=2), out, as_json):
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
    _render_extras(report, wide)


def _render_extras(report, wide: bool) -> None:  # noqa: ANN001 - BottleneckReport
    """Predicted latency, baselines, exits and --auto's choices, where the run has them."""
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
