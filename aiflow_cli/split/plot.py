"""Stacked bars (device / transfer / server) per candidate, one panel per link."""

from __future__ import annotations

from pathlib import Path

from aiflow_cli.atomic import write_figure_atomic
from aiflow_cli.schemas.plan import SplitPlan

__all__ = ["plot_plan"]


def plot_plan(plan: SplitPlan, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(plan.links)
    fig, axes = plt.subplots(n, 1, figsize=(11, 3.2 * n), squeeze=False)
    for ax, link in zip(axes[:, 0], plan.links):
        by_cut = {c.cut: c for c in link.candidates}
        order = ["device-only", *[c for c in by_cut if c not in ("device-only", "server-only")], "server-only"]
        order = [c for c in order if c in by_cut]
        # keep the model's own order for the cuts in between
        cands = [by_cut[c] for c in order]
        x = range(len(cands))
        dev = [c.device_ms + c.encode_ms for c in cands]
        net = [c.transfer_ms + c.rtt_ms for c in cands]
        srv = [c.server_ms + c.decode_ms for c in cands]
        ax.bar(x, dev, color="#4C72B0", label=f"device ({plan.device.name}, {plan.device.source})")
        ax.bar(x, net, bottom=dev, color="#C44E52", label="transfer + RTT")
        ax.bar(x, srv, bottom=[a + b for a, b in zip(dev, net)], color="#55A868",
               label=f"server ({plan.server.name}, {plan.server.source})")
        best = order.index(link.best_cut)
        ax.annotate("best", (best, cands[best].total_ms), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(x), order, rotation=70, fontsize=7)
        ax.set_ylabel("ms per request")
        ax.set_yscale("log")
        ax.set_title(f"{plan.model} over {link.name} (RTT {link.rtt_ms:g} ms), codec {plan.codec}", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    write_figure_atomic(fig, path, dpi=100)
