"""Run the shipped compression recipes and print the before/after table for docs/benchmarks.md (issue #5).

Each recipe runs through `aiflow compress` (the library call) into a temporary directory; the
report's latencies are onnxruntime medians with the same session options before and after,
measured in alternating blocks (the ratio is the median of the per-block ratios).

    .venv/bin/python benchmarks/compress_recipes.py [--only NAME ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
from pathlib import Path

RECIPES = ["efficientnet-lite0-int8-static", "minilm-l6-int8-dynamic", "smollm2-135m-int4", "smollm2-135m-draft",
           "efficientnet-lite0-prune30-distill"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from aiflow_cli.compress.pipeline import run_compress
    from aiflow_cli.profiling.host import host_info

    root = Path(__file__).resolve().parents[1] / "recipes"
    reports = {}
    for name in args.only or RECIPES:
        with tempfile.TemporaryDirectory() as tmp:
            reports[name] = run_compress(None, root / f"{name}.yaml", Path(tmp) / "out")
    host = host_info()
    print(f"# compress recipes ({datetime.date.today().isoformat()}; {host.cpu}, {host.cores} cores; "
          f"onnxruntime {host.libraries.get('onnxruntime')}, torch {host.libraries.get('torch')})")
    print()
    print("| recipe | size before -> after (ratio) | latency ms before -> after (paired ratio, per block) "
          "| metric before -> after | extra | run time |")
    print("|---|---|---|---|---|---:|")
    for name, r in reports.items():
        b, a = r.before, r.after
        extra = {k: v for k, v in a.metric.extra.items() if k in ("agreement_with_original", "next_token_agreement",
                                                                   "min_cosine")}
        for s in r.stages:
            for k in ("agreement_before", "agreement_after", "layers_after", "params_after"):
                if k in s.figures:
                    extra[k] = s.figures[k]
        extras = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in extra.items())
        print(f"| {name} | {b.size_bytes / 1e6:.1f} MB -> {a.size_bytes / 1e6:.1f} MB ({a.size_bytes / b.size_bytes:.3f}x) "
              f"| {b.latency_ms:.2f} -> {a.latency_ms:.2f} ({r.latency_ratio_paired:.3f}x; "
              f"{', '.join(f'{x:.2f}' for x in r.latency_ratios)}) "
              f"| {a.metric.name}: {_fmt(b.metric.value)}{' (dequantised GGUF)' if b.weights else ''} -> "
              f"{_fmt(a.metric.value)} | {extras} | {r.seconds_total:.0f} s |")
    print()
    for name, r in reports.items():
        print(f"- {name}: latency input {r.latency_input}; data {r.data}")
        if r.before.weights:
            print(f"  - 'before' is not an fp32 original: {r.before.weights}")
    if args.json:
        args.json.write_text(json.dumps({k: v.model_dump(mode="json") for k, v in reports.items()}, indent=1))


def _fmt(value: float) -> str:
    """Shares to six decimals (a cosine of 0.999998 is not 1), other metrics to four."""
    return f"{value:.6f}" if abs(value) <= 1 else f"{value:.4f}"


if __name__ == "__main__":
    main()
