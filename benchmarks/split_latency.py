"""Predicted vs measured compute latency of every exported EfficientNet-Lite0 pair, side by side.

Prediction: this machine's own onnxruntime profile for both sides (device = segments up to the
cut, server = the rest; no link, no codec), computed exactly as `aiflow split --device P.json
--server P.json` does: per-segment compute plus one per-call overhead per side. Measurement: the
exported device.onnx and server.onnx run back to back in onnxruntime with the same session
options, one pair at a time and repeated, as a deployed device runs it.

The benchmark can fail: each side's prediction is compared with that side's own measurement
(not a total that sums to the whole model by construction), and the command exits 1 when any
side of any cut is off by more than ``--limit`` (default 15%).

This machine is shared and its speed drifts by tens of percent over minutes, so profiling and
pair timing alternate in ``--rounds`` rounds and every median pools all rounds: drift lands on
both sides of the comparison alike. Prints a markdown table for docs/benchmarks.md.

    .venv/bin/python benchmarks/split_latency.py [--rounds 5] [--repeats 8] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
import time
from pathlib import Path


def _pooled_profile(reports):  # noqa: ANN001, ANN202 - ProfileReport list -> ProfileReport
    """One profile whose medians are the medians over all rounds."""
    from aiflow_cli.profiling.measure import call_overhead_ms
    from aiflow_cli.schemas.profile import Latency

    first = reports[0].model_copy(deep=True)
    for i, seg in enumerate(first.segments):
        seg.latency_ms = Latency(median=statistics.median(r.segments[i].latency_ms.median for r in reports),
                                 p90=max(r.segments[i].latency_ms.p90 for r in reports),
                                 stable=all(r.segments[i].latency_ms.stable for r in reports))
    first.total.latency_ms_whole_model = Latency(
        median=statistics.median(r.total.latency_ms_whole_model.median for r in reports),
        p90=max(r.total.latency_ms_whole_model.p90 for r in reports),
        stable=all(r.total.latency_ms_whole_model.stable for r in reports))
    first.total.latency_ms_sum_of_segment_medians = round(sum(s.latency_ms.median for s in first.segments), 4)
    first.total.call_overhead_ms = call_overhead_ms([s.latency_ms.median for s in first.segments],
                                                    first.total.latency_ms_whole_model.median)
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=8, help="timed runs per round, for the profile and each pair")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads for profile and pairs alike (1: repeatable; 2 threads on this "
                             "shared VM jitter by +-15%% from run to run)")
    parser.add_argument("--limit", type=float, default=0.15, help="largest allowed |error| per side (default 0.15)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from aiflow_cli.codecs import make_codec
    from aiflow_cli.export.api import export_split
    from aiflow_cli.models import load_model
    from aiflow_cli.ort import ort_session
    from aiflow_cli.profiling.host import host_info
    from aiflow_cli.profiling.measure import profile_model
    from aiflow_cli.schemas.manifest import load_manifest
    from aiflow_cli.split.planner import side_latencies

    model = load_model("zoo:efficientnet-lite0")
    x = model.make_input(1, None)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pairs"
        export_split(model, model.cuts, {c: make_codec("fp32") for c in model.cuts}, out, triton=False, verify_count=10)
        manifest = load_manifest(out)
        # the same session options the profile and aiflow's own pair runner use
        sessions = {p.cut: (ort_session(out / p.device.file, args.threads), ort_session(out / p.server.file, args.threads))
                    for p in manifest.pairs}
        reports, times, dev_times, srv_times = [], {c: [] for c in sessions}, {c: [] for c in sessions}, \
            {c: [] for c in sessions}
        for _ in range(args.rounds):
            reports.append(profile_model(model, batch=1, runtime="onnxruntime", repeats=args.repeats, warmup=2,
                                         threads=args.threads))
            for cut, (dev, srv) in sessions.items():
                for r in range(args.repeats + 2):
                    t0 = time.perf_counter()
                    wire = dev.run(None, {"image": x.numpy()})[0]
                    t1 = time.perf_counter()
                    srv.run(None, {"activation": wire})
                    t2 = time.perf_counter()
                    if r >= 2:
                        times[cut].append(t2 - t0)
                        dev_times[cut].append(t1 - t0)
                        srv_times[cut].append(t2 - t1)
        report = _pooled_profile(reports)
        profile_json = Path(tmp) / "profile.json"
        profile_json.write_text(report.model_dump_json())
        cost = side_latencies(profile_json, model, lambda: report, "device", accept_unstable=True).cost

    rows = []
    n = len(model.cuts) + 1
    for i, cut in enumerate(model.cuts):
        device, server = cost.span_ms(0, i + 1), cost.span_ms(i + 1, n)
        meas_dev, meas_srv = (statistics.median(t[cut]) * 1e3 for t in (dev_times, srv_times))
        measured = statistics.median(times[cut]) * 1e3
        rows.append({"cut": cut, "device_ms": round(device, 3), "server_ms": round(server, 3),
                     "measured_device_ms": round(meas_dev, 3), "measured_server_ms": round(meas_srv, 3),
                     "device_error": round((device - meas_dev) / meas_dev, 4),
                     "server_error": round((server - meas_srv) / meas_srv, 4),
                     "predicted_ms": round(device + server, 3), "measured_ms": round(measured, 3),
                     "error": round((device + server - measured) / measured, 4)})
    host = host_info()
    print(f"# split latency: predicted vs measured (onnxruntime, batch 1, {args.threads} thread(s), "
          f"{args.rounds} rounds x {args.repeats})")
    print(f"host: {host.cpu}, {host.cores} cores; onnxruntime {host.libraries.get('onnxruntime')}; "
          f"{datetime.date.today().isoformat()}; whole model {report.total.latency_ms_whole_model.median:.2f} ms; "
          f"sum of the {len(report.segments)} segment medians {report.total.latency_ms_sum_of_segment_medians:.2f} ms; "
          f"per-call overhead {report.total.call_overhead_ms:.3f} ms (charged once per side)")
    print()
    print("| cut | device ms pred. / meas. | device error | server ms pred. / meas. | server error | "
          "pair ms pred. / meas. | pair error |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['cut']} | {r['device_ms']:.2f} / {r['measured_device_ms']:.2f} | {r['device_error'] * 100:+.1f}% | "
              f"{r['server_ms']:.2f} / {r['measured_server_ms']:.2f} | {r['server_error'] * 100:+.1f}% | "
              f"{r['predicted_ms']:.2f} / {r['measured_ms']:.2f} | {r['error'] * 100:+.1f}% |")
    worst_dev = max(rows, key=lambda r: abs(r["device_error"]))
    worst_srv = max(rows, key=lambda r: abs(r["server_error"]))
    worst = max(abs(worst_dev["device_error"]), abs(worst_srv["server_error"]))
    print(f"\nworst device |error|: {abs(worst_dev['device_error']) * 100:.1f}% ({worst_dev['cut']}); worst server "
          f"|error|: {abs(worst_srv['server_error']) * 100:.1f}% ({worst_srv['cut']}); limit {args.limit * 100:.0f}% per side: "
          + ("PASS" if worst <= args.limit else "FAIL"))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "worst_abs_side_error": worst}, indent=1))
    raise SystemExit(0 if worst <= args.limit else 1)


if __name__ == "__main__":
    main()
