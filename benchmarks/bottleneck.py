"""Learned bottleneck vs JPEG upload and the non-learned codecs (issue #4), EfficientNet-Lite0.

Runs ``aiflow split --bottleneck`` once over several cuts and betas (with early exits), then
prints a Markdown report: every measured point, the baselines, the exits, and the issue's
acceptance figures computed from the JSON (no figure is typed in by hand).

    .venv/bin/python benchmarks/bottleneck.py [--cuts block12,block13,block14,block15]
        [--betas 5e-5,1e-4,2e-4] [--exits block12,block15] [--out docs/bottleneck.json]
        [--plot docs/bottleneck.png]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cuts", default="block12,block13,block14,block15")
    ap.add_argument("--betas", default="5e-5,1e-4,2e-4")
    ap.add_argument("--exits", default="block12,block15")
    ap.add_argument("--out", type=Path, default=REPO / "bench-bottleneck.json")
    ap.add_argument("--plot", type=Path, default=REPO / "bench-bottleneck.png")
    args = ap.parse_args()
    cmd = [str(Path(sys.executable).with_name("aiflow")), "split", "zoo:efficientnet-lite0", "--bottleneck",
           "--beta", args.betas, "--out", str(args.out), "--plot", str(args.plot)]
    for cut in args.cuts.split(","):
        cmd += ["--cut", cut]
    for cut in filter(None, args.exits.split(",")):
        cmd += ["--exit", cut]
    t0 = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.time() - t0
    report = json.loads(args.out.read_text())
    print(render(report, " ".join(["aiflow", *cmd[1:]]), wall))


def _uniform_ratio(p: dict) -> str:
    u = p["uniform_bytes_at_equal_agreement"]
    return "-" if u is None else f"{u:,.0f} ({p['bytes_per_input'] / u:.2f}x)"


def render(r: dict, command: str, wall: float) -> str:
    ref = r["reference_metric"]
    base = {b["name"]: b for b in r["baselines"]}
    jpeg90 = base["jpeg-q90"]["bytes_per_input"]
    lines = [f"Command: `{command}`  ", f"Machine: {platform.processor() or platform.machine()}, "
             f"{time.strftime('%Y-%m-%d')}; whole run {wall / 60:.1f} min.  ",
             f"Unsplit top-1 on the {r['eval_inputs']} evaluation images: {ref:.3f}; training inputs: "
             f"{r['train_inputs']} (training split and mirror images).", "",
             "| cut | beta | bytes/image (coded) | coded/estimated | top-1 | drop (pts) | agreement | KL | "
             "uniform bytes at the same agreement | JPEG q90 / bytes | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in r["points"]:
        lines.append(f"| {p['cut']} | {p['beta']:g} | {p['bytes_per_input']:,.0f} | "
                     f"{(p['bytes_per_input'] - 8) / p['estimated_bytes_per_input']:.3f} | {p['metric']:.3f} | "
                     f"{100 * (ref - p['metric']):+.1f} | {p['agreement']:.3f} | {p['kl']:.4f} | {_uniform_ratio(p)} | "
                     f"{jpeg90 / p['bytes_per_input']:.1f}x | {p['train_seconds']:.0f} |")
    lines += ["", "| baseline | bytes/image | top-1 | agreement |", "|---|---|---|---|"]
    lines += [f"| {b['name']} | {b['bytes_per_input']:,.0f} | {b['metric']:.3f} | {b['agreement']:.3f} |"
              for b in r["baselines"]]
    if r["exits"]:
        lines += ["", "| exit at | threshold | exit rate | exit top-1 | top-1 with exit | drop (pts) | compute saved |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {e['cut']} | {e['threshold']:.2f} | {e['exit_rate']:.1%} | {e['exit_accuracy']:.3f} | "
                  f"{e['metric']:.3f} | {e['drop']:+.1f} | {e['compute_saved']:.2%} |" for e in r["exits"]]
    lines += ["", "Acceptance figures (computed from the JSON above):", ""]
    ok = [p for p in r["points"] if 100 * (ref - p["metric"]) <= r["max_drop"] + 1e-9]
    if ok:
        best = min(ok, key=lambda p: p["bytes_per_input"])
        reach = [b for n, b in base.items() if n.startswith("jpeg-") and b["metric"] >= best["metric"]]
        quality = min(reach, key=lambda b: b["bytes_per_input"])["name"] if reach else "none up to q95"
        lines.append(f"- Fewest bytes within {r['max_drop']:g} point: {best['cut']} beta {best['beta']:g}, "
                     f"{best['bytes_per_input']:,.0f} B, top-1 {best['metric']:.3f}: {jpeg90 / best['bytes_per_input']:.1f}x "
                     f"fewer than JPEG q90 ({jpeg90:,.0f} B). JPEG quality reaching the same top-1: {quality}.")
    for p in r["points"]:
        u = p["uniform_bytes_at_equal_agreement"]
        if u is not None and p["bytes_per_input"] <= 0.75 * u:
            lines.append(f"- vs uniform at {p['cut']} (beta {p['beta']:g}): {p['bytes_per_input']:,.0f} B at agreement "
                         f"{p['agreement']:.3f}, uniform needs {u:,.0f} B for it: {p['bytes_per_input'] / u:.2f}x.")
    worst = max((p["bytes_per_input"] - 8) / p["estimated_bytes_per_input"] for p in r["points"])
    lines.append(f"- Worst coded/estimated over all points: {worst:.3f}.")
    lines.append(f"- Longest training of one point (features cached): {max(p['train_seconds'] for p in r['points']):.0f} s.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
