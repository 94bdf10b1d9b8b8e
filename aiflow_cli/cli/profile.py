"""``aiflow profile``: measure a model segment by segment on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from aiflow_cli.api.profile import ProfileSettings
from aiflow_cli.cli.common import (
    cli_errors,
    console,
    emit,
    err_console,
    fmt_bytes,
    fmt_count,
    progress_bar,
    show,
)
from aiflow_cli.cli.options import (
    JsonOpt,
    ModelArg,
    OutFileOpt,
    TrustRemoteCodeOpt,
    check_outputs,
    opt,
)

__all__ = ["profile_cmd"]

P, D = ProfileSettings, ProfileSettings.defaults()


@cli_errors
def profile_cmd(
    model: ModelArg,
    batch: Annotated[int, opt(P, "batch")] = D.batch,
    seq_len: Annotated[Optional[int], opt(P, "seq_len")] = D.seq_len,
    runtime: Annotated[str, opt(P, "runtime")] = D.runtime,
    on: Annotated[str, opt(P, "on")] = D.on,
    repeats: Annotated[int, opt(P, "repeats")] = D.repeats,
    warmup: Annotated[int, opt(P, "warmup")] = D.warmup,
    threads: Annotated[Optional[int], opt(P, "threads")] = D.threads,
    out: OutFileOpt = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a PNG bar chart of latency and cut sizes.")] = None,
    target: Annotated[Optional[Path], opt(P, "target")] = D.target,
    target_runtime: Annotated[Optional[str], opt(P, "target_runtime")] = D.target_runtime,
    target_batch: Annotated[Optional[int], opt(P, "target_batch")] = D.target_batch,
    as_json: JsonOpt = False,
    trust_remote_code: TrustRemoteCodeOpt = D.trust_remote_code,
) -> None:
    """Measure latency, MACs, parameters, memory and the bytes crossing every cut of MODEL.

    Runs on this machine (its CPU, or with --on cuda its GPU). With --target, also projects each
    segment onto that hardware (labelled 'projected'): a roofline for the work plus, for the
    runtime chosen by --target-runtime, kernels x the per-kernel overhead the YAML states, at
    --target-batch. The JSON format is documented in docs/formats.md and is what `aiflow split` reads.
    """
    from aiflow_cli.api.profile import profile
    from aiflow_cli.profiling.plot import plot_profile

    settings = P.from_options(locals())
    check_outputs(out, plot)
    with progress_bar(enabled=True) as progress:
        report = profile(settings, progress)
    _warn(report)
    if emit(report.model_dump_json(indent=2), out, as_json, plot, lambda path: plot_profile(report, path)):
        return
    _render(report)
    for path in (out, plot):
        if path is not None:
            console.print(f"wrote {path}")


def _warn(report) -> None:  # noqa: ANN001 - ProfileReport, imported lazily
    """Say on stderr when the figures are not to be trusted (JSON on stdout stays clean)."""
    from aiflow_cli.profiling.measure import STABILITY_ADVICE

    if not report.stability.stable:
        err_console.print(f"[bold yellow]warning:[/] timings are unstable ({'; '.join(report.stability.warnings)}); "
                          f"{STABILITY_ADVICE}. aiflow split refuses this profile without --force.",
                          highlight=False, soft_wrap=True)
    if "random" in report.inputs:
        err_console.print(f"[bold yellow]warning:[/] inputs: {report.inputs}", highlight=False, soft_wrap=True)


def _render(report) -> None:  # noqa: ANN001 - ProfileReport, imported lazily
    lm = report.decode is not None
    proj = report.projection
    where = (f"{report.host.accelerator} ({report.settings.runtime})" if report.host.accelerator
             else f"{report.host.cpu} ({report.host.threads} threads, {report.settings.runtime})")
    title = (f"{report.model.name} on {where}, "
             f"batch {report.settings.batch}" + (f", {report.settings.seq_len} tokens" if report.settings.seq_len else ""))
    notes = ["! p90 far above the median (unstable)"] if any(not s.latency_ms.stable for s in report.segments) else []
    notes += ["projected ms: c/m/l/h = compute, memory, kernel launch or host dispatch sets the time"] if proj else []
    table = Table(title=title, title_style="bold", caption="; ".join(notes) or None)
    table.add_column("segment")
    table.add_column("prefill ms\nmed/p90" if lm else "ms\nmed/p90", justify="right")
    if lm:
        table.add_column("decode ms\nmed/p90", justify="right")
    if proj:
        table.add_column("ms\nprojected", justify="right", style="yellow")
    for name in ("MACs", "kernels", "params", "weights", "peak\nact.", "cut\nbytes"):
        table.add_column(name, justify="right")
    for i, seg in enumerate(report.segments):
        mark = "" if seg.latency_ms.stable else " [yellow]![/]"
        row = [seg.name, f"{seg.latency_ms.median:.2f}/{seg.latency_ms.p90:.2f}{mark}"]
        if lm:
            row.append(f"{seg.decode_latency_ms.median:.2f}/{seg.decode_latency_ms.p90:.2f}")
        if proj:
            row.append(f"{proj.segments[i].latency_ms:.3g} {proj.segments[i].bound[0]}")
        row += [fmt_count(seg.macs), str(seg.kernels.ops), fmt_count(seg.params), fmt_bytes(seg.weight_bytes),
                fmt_bytes(seg.peak_memory_bytes), fmt_bytes(seg.out_bytes) if i < len(report.cuts) else "output"]
        table.add_row(*row)
    show(table)
    t = report.total
    console.print(f"{len(report.cuts)} cuts; total MACs {fmt_count(t.macs)}, params {fmt_count(t.params)} "
                  f"({fmt_bytes(t.weight_bytes)})")
    whole = t.latency_ms_whole_model.median
    diff = (t.latency_ms_sum_of_segment_medians - whole) / whole * 100
    console.print(f"{'prefill ' if lm else ''}latency: whole model {whole:.3f} ms median "
                  f"(p90 {t.latency_ms_whole_model.p90:.3f}); sum of segment medians "
                  f"{t.latency_ms_sum_of_segment_medians:.3f} ms ({diff:+.1f}%); per-call overhead "
                  f"{t.call_overhead_ms:.3f} ms; {'stable' if report.stability.stable else '[yellow]UNSTABLE[/]'}")
    if lm:
        d = t.decode_latency_ms_whole_model
        console.print(f"decode step (KV cache of {report.decode.decode_cache_tokens} tokens): whole model "
                      f"{d.median:.3f} ms median (p90 {d.p90:.3f}); sum of segment medians "
                      f"{sum(s.decode_latency_ms.median for s in report.segments):.3f} ms")
    console.print(f"inputs: {report.inputs}", highlight=False)
    ib = report.input_bytes
    extra = f", JPEG q90 {fmt_bytes(ib.jpeg_q90)}" if ib.jpeg_q90 else (f", token ids {fmt_bytes(ib.tokens)}" if ib.tokens else "")
    console.print(f"input: raw {fmt_bytes(ib.raw)}{extra}")
    if proj:
        kernels = sum(s.kernels for s in proj.segments)
        host = f", kernels x {proj.host_per_kernel_us:g} us on the host" if proj.host_per_kernel_us else ""
        console.print(f"[yellow]projected[/] on {proj.target}, {proj.runtime}, batch {proj.batch}: "
                      f"{proj.total_latency_ms:.4f} ms = per segment max(roofline / efficiency {proj.efficiency:.3f} "
                      f"({proj.efficiency_source}) + kernels x {proj.per_kernel_us:g} us{host}) over {kernels} kernels, "
                      f"+ {proj.call_overhead_ms * 1e3:g} us per call; not measured", highlight=False)
        console.print(f"runtime figures: {proj.runtime_source}" + (" [yellow](assumed)[/]" if proj.runtime_assumed else ""),
                      highlight=False)
        if proj.fits_memory is False:
            console.print(f"[yellow]does not fit[/] in {proj.target}'s memory at batch {proj.batch}")
