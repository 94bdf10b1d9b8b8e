"""Bench plot: measured (bars) vs predicted (markers) per latency component, one panel per link."""

from __future__ import annotations

from pathlib import Path

from aiflow_cli.atomic import write_figure_atomic
from aiflow_cli.schemas.bench import BenchReport

__all__ = ["plot_bench"]


def plot_bench(report: BenchReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    links = list(dict.fromkeys(r.link for r in report.results))
    fig, axes = plt.subplots(1, len(links), figsize=(5 * len(links), 4.2), squeeze=False, sharey=True)
    for ax, link in zip(axes[0], links):
        rows = [r for r in report.results if r.link == link]
        names = [c.name for c in rows[0].components]
        width = 0.8 / len(rows)
        for k, r in enumerate(rows):
            xs = [i + (k - (len(rows) - 1) / 2) * width for i in range(len(names))]
            ax.bar(xs, [c.measured_ms for c in r.components], width, label=f"{r.cut} {r.codec} measured", alpha=0.75)
            ax.plot(xs, [c.predicted_ms for c in r.components], "k_", markersize=14, mew=2,
                    label="predicted" if k == 0 else None)
            ax.errorbar([xs[-1]], [r.total_p50_ms], yerr=[[0], [r.total_p90_ms - r.total_p50_ms]], fmt="none",
                        ecolor="gray", capsize=3)
        ax.set_xticks(range(len(names)), names)
        ax.set_title(f"link {link}")
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel("ms per request (median; whisker: p90)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{report.export} ({report.engine}): measured vs predicted")
    write_figure_atomic(fig, path)
