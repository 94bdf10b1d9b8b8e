"""A PNG of where time and bytes go, segment by segment."""

from __future__ import annotations

from pathlib import Path

from aiflow_cli.atomic import write_figure_atomic
from aiflow_cli.schemas.profile import ProfileReport

__all__ = ["plot_profile"]


def plot_profile(report: ProfileReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s.name for s in report.segments]
    lat = [s.latency_ms.median for s in report.segments]
    p90 = [s.latency_ms.p90 - s.latency_ms.median for s in report.segments]
    out_kb = [s.out_bytes / 1e3 for s in report.segments[:-1]]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8, 0.45 * len(names)), 7), sharex=True)
    ax1.bar(names, lat, yerr=[[0] * len(p90), p90], color="#4C72B0", capsize=2, label="measured median (bar: p90)")
    if report.projection is not None:
        ax1.plot(names, [s.latency_ms for s in report.projection.segments], "o-", color="#DD8452",
                 label=f"projected on {report.projection.target}")
    ax1.set_ylabel("latency per segment (ms)")
    ax1.set_title(f"{report.model.name}: batch {report.settings.batch}, {report.settings.runtime}, "
                  f"host {report.host.cpu}", fontsize=9)
    ax1.legend(fontsize=8)
    ax2.bar(names[:-1], out_kb, color="#55A868", label="bytes crossing the cut after this segment")
    ax2.axhline(report.input_bytes.raw / 1e3, color="grey", ls="--", lw=1, label="raw input")
    if report.input_bytes.jpeg_q90:
        ax2.axhline(report.input_bytes.jpeg_q90 / 1e3, color="black", ls=":", lw=1, label="JPEG q90 input")
    ax2.set_yscale("log")
    ax2.set_ylabel("KB crossing (log)")
    ax2.legend(fontsize=8)
    ax2.tick_params(axis="x", rotation=70, labelsize=7)
    write_figure_atomic(fig, path)
