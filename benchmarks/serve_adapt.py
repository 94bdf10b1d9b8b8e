"""Adaptive cut switching under a rate trace, against every fixed cut (``aiflow serve-pair bench --trace``).

The device is emulated 6x slower than this machine (``--device-slowdown 6``; a phone-class device
against a server core), so that which cut is best depends on the link: block3 (int8 + zstd,
28 KB, little device work) at 2 MB/s, block14 (int8 + zstd, 9 KB, most of the model on the
device) at 0.25 MB/s. The link follows 2 MB/s -> 0.25 MB/s -> 2 MB/s (10 s each), RTT 20 ms.
Uses the profile and pairs of benchmarks/serve_pair.py (``--work``), exporting the two cuts.

    .venv/bin/python benchmarks/serve_adapt.py [--work /tmp/aiflow-serve-bench] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/aiflow-serve-bench"))
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--slowdown", type=float, default=6.0)
    args = ap.parse_args()
    aiflow = str(Path(sys.executable).with_name("aiflow"))
    profile, pairs, trace, out = (args.work / "profile.json", args.work / "adapt-pairs", args.work / "trace.csv",
                                  args.work / "adapt.json")
    if not profile.is_file():
        subprocess.run(["taskset", "-c", "1", aiflow, "profile", "zoo:efficientnet-lite0", "--runtime", "onnxruntime",
                        "--threads", "1", "--repeats", "30", "--out", str(profile)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([aiflow, "split", "zoo:efficientnet-lite0", "--device", str(profile), "--server", str(profile),
                    "--bandwidth", "0.25MB/s,2MB/s", "--rtt", "20ms", "--cut", "block3", "--cut", "block14",
                    "--codec", "int8-channel+zstd", "--export", str(pairs), "--force", "--no-triton"],
                   check=True, stdout=subprocess.DEVNULL)
    third = args.seconds / 3
    trace.write_text(f"seconds,rate\n0,2MB/s\n{third:g},0.25MB/s\n{2 * third:g},2MB/s\n")
    subprocess.run([aiflow, "serve-pair", "bench", str(pairs), "--trace", str(trace), "--rtt", "20ms", "--seconds",
                    str(args.seconds), "--device-slowdown", str(args.slowdown), "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    report = json.loads(out.read_text())
    rates = list(report["variants"][0]["median_ms_by_rate"])
    print(f"Trace {report['trace']} (bytes/s), RTT {report['rtt_ms']:g} ms, {report['seconds']:g} s per variant; "
          f"{report['pinning']}.")
    print()
    print("| variant | requests | median ms (measured / predicted) | mean ms (measured / predicted) | "
          + " | ".join(f"median at {float(r) / 1e6:g} MB/s" for r in rates) + " | cuts used |")
    print("|---|---|---|---|" + "---|" * len(rates) + "---|")
    for v in report["variants"]:
        print(f"| {v['variant']} | {v['requests']} ({v['failed']} failed) | {v['median_ms']:.1f} / "
              f"{v['predicted_median_ms']:.1f} | {v['mean_ms']:.1f} / {v['predicted_mean_ms']:.1f} | "
              + " | ".join(f"{v['median_ms_by_rate'][r]:.1f}" for r in rates) + " | "
              + (", ".join(f"{k} x{n}" for k, n in v["choices"].items()) or "-") + " |")
    variants = {v["variant"]: v for v in report["variants"]}
    adaptive, best, worst = variants["adaptive"], variants[report["best_fixed"]], variants[report["worst_fixed"]]
    print(f"\nadaptive vs best fixed ({best['variant']}): median {adaptive['median_ms'] - best['median_ms']:+.1f} ms, "
          f"mean {adaptive['mean_ms'] - best['mean_ms']:+.1f} ms; margin over the worst ({worst['variant']}): measured "
          f"{worst['median_ms'] - adaptive['median_ms']:.1f} ms, predicted "
          f"{worst['predicted_median_ms'] - adaptive['predicted_median_ms']:.1f} ms (medians)")


if __name__ == "__main__":
    main()
