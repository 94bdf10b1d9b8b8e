"""Predicted vs measured compute latency of every exported EfficientNet-Lite0 pair (issue #3).

Prediction: this machine's own onnxruntime profile for both sides (device = segments up to the
cut, server = the rest; no link, no codec), as `aiflow split` computes it from a profile JSON. Measurement: the exported device.onnx + server.onnx
run back to back in onnxruntime, same thread settings, interleaved across cuts round by round so
drift on this shared machine hits every cut alike. Prints a markdown table for docs/benchmarks.md.

    .venv/bin/python benchmarks/split_latency.py [--repeats 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from aiflow_cli.codecs import make_codec
    from aiflow_cli.export.api import export_split
    from aiflow_cli.models import load_model
    from aiflow_cli.profiling.host import host_info
    from aiflow_cli.profiling.measure import profile_model
    from aiflow_cli.schemas.manifest import load_manifest

    model = load_model("zoo:efficientnet-lite0")
    from aiflow_cli.split.planner import side_latencies

    report = profile_model(model, batch=1, runtime="onnxruntime", repeats=args.repeats, warmup=5)
    with tempfile.TemporaryDirectory() as tmp:
        profile_json = Path(tmp) / "profile.json"
        profile_json.write_text(report.model_dump_json())
        # exactly what `aiflow split --device profile.json --server profile.json` uses
        seg_ms, _ = side_latencies(profile_json, model, lambda: report, "device")
        out = Path(tmp) / "pairs"
        export_split(model, model.cuts, {c: make_codec("fp32") for c in model.cuts}, out, triton=False, verify_count=10)
        manifest = load_manifest(out)
        from aiflow_cli.export.sessions import ort_session

        # the same session options the profile and aiflow's own pair runner use
        sessions = {p.cut: (ort_session(out / p.device.file), ort_session(out / p.server.file)) for p in manifest.pairs}
        x = model.make_input(1, None).numpy()
        times: dict[str, list[float]] = {c: [] for c in sessions}
        for r in range(args.repeats + 3):
            for cut, (dev, srv) in sessions.items():
                t0 = time.perf_counter()
                wire = dev.run(None, {"image": x})[0]
                srv.run(None, {"activation": wire})
                if r >= 3:
                    times[cut].append(time.perf_counter() - t0)
    rows = []
    for i, cut in enumerate(model.cuts):
        predicted = sum(seg_ms[: i + 1]) + sum(seg_ms[i + 1:])
        measured = statistics.median(times[cut]) * 1e3
        rows.append({"cut": cut, "device_ms": round(sum(seg_ms[: i + 1]), 3), "server_ms": round(sum(seg_ms[i + 1:]), 3),
                     "predicted_ms": round(predicted, 3), "measured_ms": round(measured, 3),
                     "error": round((predicted - measured) / measured, 4)})
    host = host_info()
    print(f"# split latency: predicted vs measured (onnxruntime, batch 1, {args.repeats} repeats)")
    print(f"host: {host.cpu}, {host.cores} cores; onnxruntime {host.libraries.get('onnxruntime')}; "
          f"{datetime.date.today().isoformat()}; whole model {report.total.latency_ms_whole_model.median:.2f} ms; "
          f"raw sum of the {len(report.segments)} segment medians {report.total.latency_ms_sum_of_segment_medians:.2f} ms "
          "(the plan apportions the whole-model time by segment share)")
    print()
    print("| cut | device ms (pred.) | server ms (pred.) | predicted ms | measured pair ms | error |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['cut']} | {r['device_ms']:.2f} | {r['server_ms']:.2f} | {r['predicted_ms']:.2f} | "
              f"{r['measured_ms']:.2f} | {r['error'] * 100:+.1f}% |")
    worst = max(abs(r["error"]) for r in rows)
    print(f"\nworst |error|: {worst * 100:.1f}% (target <= 15%)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "worst_abs_error": worst}, indent=1))
    raise SystemExit(0 if worst <= 0.15 else 1)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
