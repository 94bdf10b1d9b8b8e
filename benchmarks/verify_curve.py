"""verify(k): what one target pass over k new tokens costs, per weight choice (issue #25, item 1).

A speculative round's verification is one target pass over the k drafted tokens (plus the one
the target had not seen) on top of the KV cache. Its cost against k decides whether speculation
can pay: a verifier whose pass grows as fast as k one-token steps never does. For each weight
choice the target is exported alone (``aiflow split speculative``'s own ``_export_lm``, optimum's
graph), then timed on one thread: a pass of k new tokens after a ``--past``-token prefix,
k = 1..``--k-max``, the weight choices alternating within every repeat, median of ``--repeats``.

Prints the Markdown table (ms and the ratio to k = 1) for docs/benchmarks.md; ``--json`` writes the
figures. It can fail: exit 1 when the int8 curve (when measured) grows more than the int4 one from
k = 1 to k = k-max.

    .venv/bin/python benchmarks/verify_curve.py [--model zoo:smollm2-135m] [--weights fp32,int8,int4,int4-f32]
        [--k-max 24] [--past 128] [--repeats 5] [--work /tmp/aiflow-verify] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path


def export(model_spec: str, weights: list[str], work: Path) -> dict[str, tuple[Path, list]]:
    """{weights: (graph, input declarations)}, exporting what is not in ``work`` yet."""
    from aiflow_cli.export.speculative import _export_lm
    from aiflow_cli.models import load_model
    from aiflow_cli.models.optimum_export import graph_decls

    out: dict[str, tuple[Path, list]] = {}
    model = None
    for w in weights:
        path = work / f"{w}.onnx"
        if not path.is_file():
            model = model or load_model(model_spec)
            t0 = time.perf_counter()
            _export_lm(model, work, path.name, w, "optimum")
            print(f"exported {w} in {time.perf_counter() - t0:.0f} s ({path.stat().st_size / 1e6:.0f} MB)",
                  file=sys.stderr, flush=True)
        out[w] = (path, graph_decls(path)[0])
    return out


def curve(graphs: dict[str, tuple[Path, list]], ks: list[int], past: int, repeats: int) -> dict[str, dict[int, float]]:
    import numpy as np

    from aiflow_cli.models.speculative import KVSession

    sessions = {w: KVSession.open(p, decls, threads=1) for w, (p, decls) in graphs.items()}
    rng = np.random.default_rng(0)
    prefix = [int(t) for t in rng.integers(100, 1000, past)]
    cached = {}
    for w, lm in sessions.items():
        lm.feed(prefix)
        cached[w] = dict(lm.past)
    times: dict[str, dict[int, list[float]]] = {w: {k: [] for k in ks} for w in sessions}
    for _ in range(repeats):
        for k in ks:
            new = [int(t) for t in rng.integers(100, 1000, k)]
            for w, lm in sessions.items():
                lm.past, lm.length = dict(cached[w]), past
                t0 = time.perf_counter()
                lm.feed(new)
                times[w][k].append((time.perf_counter() - t0) * 1e3)
    return {w: {k: statistics.median(v) for k, v in per_k.items()} for w, per_k in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="zoo:smollm2-135m")
    parser.add_argument("--weights", default="fp32,int8,int4,int4-f32")
    parser.add_argument("--k-max", type=int, default=24)
    parser.add_argument("--past", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/tmp/aiflow-verify"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not (1 <= args.k_max <= 64 and 1 <= args.past <= 2048 and 1 <= args.repeats <= 50):
        parser.error("--k-max 1..64, --past 1..2048, --repeats 1..50")
    weights = [w for w in args.weights.split(",") if w]
    work = args.work / args.model.replace(":", "_").replace("/", "_")
    work.mkdir(parents=True, exist_ok=True)
    ks = list(range(1, args.k_max + 1))
    ms = curve(export(args.model, weights, work), ks, args.past, args.repeats)
    shown = [k for k in ks if k in (1, 2, 3, 4, 5, 6, 8, 12, 16, 20, 24) or k == args.k_max]
    print(f"verify(k), {args.model}, one thread, {args.past}-token past, median of {args.repeats}; "
          f"{datetime.date.today()}, {platform.node()}")
    print("| weights | " + " | ".join(f"k={k}" for k in shown) + f" | k={args.k_max} / k=1 |")
    print("|---|" + "---:|" * (len(shown) + 1))
    for w in weights:
        print(f"| {w} | " + " | ".join(f"{ms[w][k]:.1f}" for k in shown) + f" | {ms[w][args.k_max] / ms[w][1]:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "past": args.past, "repeats": args.repeats,
                                         "date": datetime.date.today().isoformat(), "ms": ms}, indent=1) + "\n")
    growth = {w: ms[w][args.k_max] / ms[w][1] for w in weights}
    failed = "int8" in growth and "int4" in growth and growth["int8"] > growth["int4"]
    print("FAIL: int8 grows faster than int4" if failed else "ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
