"""``aiflow compress``: pruning, quantisation and distillation from YAML recipes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from aiflow_cli.api.compress import CompressSettings
from aiflow_cli.cli.common import (
    cli_errors,
    console,
    fmt_bytes,
    fmt_count,
    progress_bar,
    show,
)
from aiflow_cli.cli.options import JsonOpt, TrustSourceOpt, opt

__all__ = ["compress_cmd"]


C, D = CompressSettings, CompressSettings.defaults()


@cli_errors
def compress_cmd(
    model: Annotated[Optional[str], typer.Argument(metavar="[MODEL]", help=C.help("model"))] = D.model,
    recipe: Annotated[Path, opt(C, "recipe")] = ...,
    out: Annotated[Path, opt(C, "out")] = ...,
    data: Annotated[Optional[Path], opt(C, "data")] = D.data,
    force: Annotated[bool, opt(C, "force")] = D.force,
    as_json: JsonOpt = False,
    trust_source: TrustSourceOpt = D.trust_source,
) -> None:
    """Compress MODEL with a recipe: prune, distil, quantise; report size, speed and quality before/after.

    Stages run in the recipe's order (prune and distill on the float model, then one quantize stage
    in onnxruntime). The recipe is validated before any work; the output directory appears only
    when every stage succeeded. The result is itself a model source: --model DIR.
    """
    from aiflow_cli.api.compress import compress

    settings = C.from_options(locals())
    with progress_bar() as progress:
        report = compress(settings, progress)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    _render(report)
    console.print(f"wrote {out} ({report.seconds_total:.0f} s)")


def _render(report) -> None:  # noqa: ANN001 - CompressReport
    b, a = report.before, report.after
    table = Table(title=f"{report.recipe} on {report.model}", title_style="bold")
    for col in ("", "before", "after", "after / before"):
        table.add_column(col, justify="right")
    table.add_row("ONNX file", fmt_bytes(b.size_bytes), fmt_bytes(a.size_bytes), f"{a.size_bytes / b.size_bytes:.3f}x")
    table.add_row("parameters", fmt_count(b.params), fmt_count(a.params), f"{a.params / b.params:.3f}x")
    table.add_row(f"latency ms ({report.latency_input})", f"{b.latency_ms:.2f}", f"{a.latency_ms:.2f}",
                  f"{report.latency_ratio_paired:.3f}x (paired)")
    if report.decode is not None:
        d = report.decode
        table.add_row("prefill ms, 64 tokens, KV graph", f"{d['before_prefill_ms']:.2f}", f"{d['after_prefill_ms']:.2f}",
                      f"{d['after_prefill_ms'] / d['before_prefill_ms']:.3f}x")
        table.add_row("decode ms per token (KV cache)", f"{d['before_decode_ms_per_token']:.2f}",
                      f"{d['after_decode_ms_per_token']:.2f}",
                      f"{d['after_decode_ms_per_token'] / d['before_decode_ms_per_token']:.3f}x")
    table.add_row(a.metric.name, f"{b.metric.value:.4f}", f"{a.metric.value:.4f}",
                  f"{a.metric.value - b.metric.value:+.4f}")
    for key, value in a.metric.extra.items():
        if key in ("agreement_with_original", "next_token_agreement", "min_cosine"):
            table.add_row(key.replace("_", " "), "", f"{value:.4f}", "")
    show(table)
    if b.weights:
        console.print(f"before = {b.weights}", highlight=False)
    stages = Table(title="stages", title_style="bold")
    for col in ("#", "stage", "seconds", "figures"):
        stages.add_column(col)
    for s in report.stages:
        figures = ", ".join(f"{k}={v}" for k, v in s.figures.items() if not isinstance(v, list))
        stages.add_row(str(s.index), s.kind + (f"/{s.method}" if s.method else ""), f"{s.seconds:.1f}", figures)
    show(stages)
