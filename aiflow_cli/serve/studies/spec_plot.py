"""The study's figure, in the style of the AI Flow paper's: TPOT against the draft length k, one
line per link, server-only as a horizontal line of the same colour, the cost model dashed, and with
``--overlap`` a second measured line per link (open squares)."""

from __future__ import annotations

from pathlib import Path

from aiflow_cli.atomic import write_figure_atomic
from aiflow_cli.schemas.spec_study import SpecStudy

__all__ = ["plot_spec_study"]


def plot_spec_study(study: SpecStudy, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, acc) = plt.subplots(1, 2, figsize=(11, 4.4), gridspec_kw={"width_ratios": [3, 2]})
    for i, base in enumerate(study.baselines):
        colour = f"C{i}"
        fixed = sorted((p for p in study.points if p.link == base.link and p.k != "auto" and not p.overlap),
                       key=lambda p: int(p.k))
        ks = [int(p.k) for p in fixed]
        ax.plot(ks, [p.tpot_ms for p in fixed], "o-", color=colour, label=f"{base.link} measured")
        ax.plot(ks, [p.predicted_tpot_ms for p in fixed], "--", color=colour, alpha=0.6, label="cost model")
        ahead = sorted((p for p in study.points if p.link == base.link and p.overlap), key=lambda p: int(p.k))
        if ahead:
            ax.plot([int(p.k) for p in ahead], [p.tpot_ms for p in ahead], "s-.", color=colour, alpha=0.8,
                    markerfacecolor="none", label=f"{base.link} --overlap")
        ax.axhline(base.server_only_tpot_ms, color=colour, ls=":", label=f"{base.link} server-only")
        auto = next((p for p in study.points if p.link == base.link and p.k == "auto"), None)
        if auto is not None:
            ax.plot([max(ks) + 1.5], [auto.tpot_ms], "*", color=colour, markersize=12,
                    label="k auto" if i == 0 else None)
    ax.set_xlabel("draft length k (tokens per round)")
    ax.set_ylabel("TPOT, ms per output token (decode phase)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    first = study.baselines[0].link
    fixed = sorted((p for p in study.points if p.link == first and p.k != "auto" and not p.overlap),
                   key=lambda p: int(p.k))
    acc.plot([int(p.k) for p in fixed], [p.acceptance for p in fixed], "ko-", label="all prompts")
    categories = sorted({c for p in fixed for c in p.acceptance_by_category})
    for c in categories:
        acc.plot([int(p.k) for p in fixed], [p.acceptance_by_category.get(c, float("nan")) for p in fixed], ".-",
                 alpha=0.5, label=c)
    acc.set_xlabel("draft length k")
    acc.set_ylabel("share of drafts accepted")
    acc.set_ylim(0, 1)
    acc.grid(alpha=0.3)
    acc.legend(fontsize=6, ncol=2)
    fig.suptitle(f"speculative decoding across the link: {study.draft} -> {study.target} "
                 f"({study.prompts} Spec-Bench prompts x {study.new_tokens} tokens; measured, {study.machine})",
                 fontsize=9)
    write_figure_atomic(fig, path)
