"""Rate-accuracy plot: learned points and every baseline on the same axes (bytes per input, log)."""

from __future__ import annotations

import re
from pathlib import Path

from aiflow_cli.atomic import write_figure_atomic
from aiflow_cli.schemas.bottleneck import BottleneckReport
from aiflow_cli.schemas.text_bottleneck import TextBottleneckReport

__all__ = ["plot_rate_accuracy", "plot_text_rate"]


def plot_rate_accuracy(report: BottleneckReport, path: Path, earlier: BottleneckReport | None = None) -> None:
    """Three panels against bytes per image: test top-1 and test agreement (learned points with
    their 95% intervals, baselines as curves, the unsplit model and the allowed drop as lines), and
    test KL to the unsplit model (log; the codec's own objective, and far steadier on a few hundred
    images than top-1, which moves 0.2 points per image). ``earlier``: another run's learned
    points (an earlier codec on the same test images), dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(18, 5))
    families: dict[str, list] = {}
    for b in report.baselines:
        family = re.sub(r"-q[\d.]+", "", b.name)  # jpeg-q90 -> jpeg, uniform-q1@c -> uniform@c
        families.setdefault(family, []).append(b)
    def value(scores, field: str) -> float | None:  # noqa: ANN001 - Scores
        return scores.kl if field == "kl" else getattr(scores, field).value

    cuts = list(dict.fromkeys(p.cut for p in report.points))
    # the same colour in every panel: strong ones for the learned codec, muted ones for the baselines
    colour = {f"learned@{c}": plt.get_cmap("tab10")(i % 10) for i, c in enumerate(cuts)}
    colour.update({f: plt.get_cmap("tab20b")((3 * i) % 20) for i, f in enumerate(families)})
    panels = ((axes[0], "top1", "top-1 (test)"), (axes[1], "agreement", "top-1 agreement with unsplit (test)"),
              (axes[2], "kl", "KL(unsplit || split), nats (test; lower is better)"))
    for ax, field, label in panels:
        for family, pts in families.items():
            pts = sorted((b for b in pts if value(b.test, field)), key=lambda b: b.bytes_per_input)
            if not pts:  # lossless baselines have no KL to draw on a log axis
                continue
            style = "o" if len(pts) == 1 else ".-"
            ax.plot([p.bytes_per_input for p in pts], [value(p.test, field) for p in pts], style, label=family,
                    alpha=0.8, color=colour[family])
        for cut in cuts:
            pts = sorted((p for p in report.points if p.cut == cut), key=lambda p: p.bytes_per_input)
            if field == "kl":
                ax.plot([p.bytes_per_input for p in pts], [p.test.kl for p in pts], "s-", lw=2.5, label=f"learned@{cut}",
                        color=colour[f"learned@{cut}"])
                continue
            values = [getattr(p.test, field) for p in pts]
            err = [[v.value - v.ci95[0] for v in values], [v.ci95[1] - v.value for v in values]]
            ax.errorbar([p.bytes_per_input for p in pts], [v.value for v in values], yerr=err, fmt="s-", lw=2.5,
                        capsize=3, label=f"learned@{cut} (95% CI)", color=colour[f"learned@{cut}"])
        for cut in dict.fromkeys(p.cut for p in (earlier.points if earlier else [])):
            pts = sorted((p for p in earlier.points if p.cut == cut), key=lambda p: p.bytes_per_input)
            ax.plot([p.bytes_per_input for p in pts], [value(p.test, field) for p in pts], "x--", color="k", lw=1.5,
                    label=f"earlier codec@{cut} (patch {earlier.patch}"
                    + ("" if earlier.shrinkage is None else f", shrinkage {earlier.shrinkage:g}")
                    + ("" if any(p.reconstruction for p in pts) else ", no offsets") + ")")
        if field == "kl":
            ax.set_yscale("log")
        if field == "top1":
            ref = report.reference_test.value
            ax.axhline(ref, color="k", ls=":", lw=1, label="unsplit")
            ax.axhline(ref - report.max_drop / 100, color="r", ls=":", lw=1, label=f"-{report.max_drop:g} point")
        ax.set_xscale("log")
        ax.set_xlabel("bytes per image (coded)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7, loc="lower right")
    chosen_on = report.operating_point.chosen_on if report.operating_point else "validation"
    on = (f"{report.data.train_inputs} training inputs and {report.data.validation_inputs} validation images"
          if chosen_on == "train+validation" else f"{report.data.validation_inputs} validation images")
    fig.suptitle(f"{report.model}: rate vs accuracy on {report.data.test_inputs} test images (choices made on {on})")
    write_figure_atomic(fig, path)


def plot_text_rate(report: TextBottleneckReport, path: Path) -> None:
    """Test fidelity against bytes per token: the learned curve (95% intervals), the uniform
    quantiser's curve, fp16 and int8+zstd as points, the fidelity floor as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    families: dict[str, list] = {}
    for p in [*report.points, *report.baselines]:
        families.setdefault(re.sub(r"-q[\d.]+", "", p.codec), []).append(p)
    for family, pts in families.items():
        pts = sorted(pts, key=lambda p: p.bytes_per_token)
        values = [p.test.fidelity for p in pts]
        err = [[v.value - v.ci95[0] for v in values], [v.ci95[1] - v.value for v in values]]
        learned = family == "learned"
        ax.errorbar([p.bytes_per_token for p in pts], [v.value for v in values], yerr=err,
                    fmt=("s-" if learned else ".-") if len(pts) > 1 else "o", lw=2.5 if learned else 1, capsize=3,
                    label=f"learned@{report.cut}" if learned else family)
    ax.axhline(report.min_fidelity, color="r", ls=":", lw=1, label=f"floor {report.min_fidelity:g}")
    ax.set_xscale("log")
    ax.set_xlabel("bytes per token (coded)")
    ax.set_ylabel("next-token agreement (test)" if report.task == "next-token" else "embedding cosine (test)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"{report.model} at {report.cut}: {report.test_tokens:,} test tokens", fontsize=10)
    write_figure_atomic(fig, path)
