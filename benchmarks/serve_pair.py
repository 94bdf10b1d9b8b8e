"""``aiflow serve-pair bench`` on EfficientNet-Lite0 pairs: measured vs the plan's prediction, both engines.

Steps, each an aiflow command (printed as it runs):

1. profile the model on one core, one thread, in onnxruntime (what each side of the pair runs);
2. export the plan's pairs with that profile as device and server: block9 with int8-channel+zstd,
   and the learned bottleneck at block12 (beta 1e-4);
3. bench each export over 0.5, 1 and 2 MB/s links with a 20 ms RTT, on the embedded engine and on
   Triton, device and server pinned to separate cores.

Prints the Markdown tables for docs/benchmarks.md and exits 1 when a bench is outside its bounds
(total 15%, each component 20%) or the two engines disagree on any answer.

    .venv/bin/python benchmarks/serve_pair.py [--requests 40] [--work /tmp/aiflow-serve-bench] [--engines embedded,triton]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path

LINKS = ["0.5MB/s,20ms", "1MB/s,20ms", "2MB/s,20ms"]


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--work", type=Path, default=Path("/tmp/aiflow-serve-bench"))
    ap.add_argument("--engines", default="embedded,triton")
    ap.add_argument("--skip-export", action="store_true", help="reuse the exports already in --work")
    args = ap.parse_args()
    aiflow = str(Path(sys.executable).with_name("aiflow"))
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    profile = work / "profile.json"
    plan = ["--device", str(profile), "--server", str(profile), "--bandwidth", "0.5MB/s,1MB/s,2MB/s", "--rtt", "20ms"]
    exports = {"block9 int8-channel+zstd": work / "block9", "block12 learned bottleneck": work / "block12"}
    if not args.skip_export:
        run(["taskset", "-c", "1", aiflow, "profile", "zoo:efficientnet-lite0", "--runtime", "onnxruntime",
             "--threads", "1", "--repeats", "30", "--out", str(profile)])
        run([aiflow, "split", "zoo:efficientnet-lite0", *plan, "--cut", "block9", "--codec", "int8-channel+zstd",
             "--export", str(exports["block9 int8-channel+zstd"]), "--force", "--no-triton"])
        run([aiflow, "split", "bottleneck", "zoo:efficientnet-lite0", "--cut", "block12", "--beta", "1e-4", *plan,
             "--jpeg-quality", "90", "--export", str(exports["block12 learned bottleneck"]), "--force"])
    reports = {}
    for engine in args.engines.split(","):
        for label, folder in exports.items():
            out = work / f"bench-{folder.name}-{engine}.json"
            cmd = [aiflow, "serve-pair", "bench", str(folder), "--engine", engine, "--requests", str(args.requests),
                   "--out", str(out), "--plot", str(work / f"bench-{folder.name}-{engine}.png")]
            for link in LINKS:
                cmd += ["--link", link]
            run(cmd)
            reports[(engine, label)] = json.loads(out.read_text())
    print(render(reports))
    same = all(reports[("embedded", lbl)]["results"][i]["predictions"] == r["predictions"]
               for (eng, lbl), rep in reports.items() if eng != "embedded" and ("embedded", lbl) in reports
               for i, r in enumerate(rep["results"]))
    print(f"\nanswers identical across engines: {'yes' if same else 'NO'}")
    raise SystemExit(0 if same and all(r["passed"] for r in reports.values()) else 1)


def render(reports: dict) -> str:
    lines = [f"Machine: {platform.processor() or platform.machine()}, {datetime.date.today().isoformat()}.", ""]
    for (engine, label), rep in reports.items():
        proto = next(iter(rep["protocol"].values()))
        lines += [f"**{label}, {engine} engine** ({rep['pinning']}; {rep['inputs']}). Measured on loopback "
                  f"first: the protocol adds {proto['request_bytes']:.0f} B to a request, the answer is "
                  f"{proto['response_bytes']:.0f} B, the serving stack {proto['stack_ms']:.2f} ms per round trip.", "",
                  "| link | device | encode | network | server | total | p90 | p99 | codec + protocol bytes | top-1 |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rep["results"]:
            cells = [f"{c['measured_ms']:.1f} / {c['predicted_ms']:.1f} ({100 * c['error']:+.0f}%)"
                     for c in r["components"]]
            top1 = r["top1"]
            lines.append(f"| {r['link']} | " + " | ".join(cells) + f" | {r['total_p90_ms']:.1f} | {r['total_p99_ms']:.1f} | "
                         f"{r['codec_bytes']:,.0f} + {r['protocol_bytes']:,.0f} | "
                         + (f"{top1['value']:.3f} (n={top1['n']})" if top1 else "-") + " |")
        lines += ["", f"within the bounds (total 15%, each component 20%): {'yes' if rep['passed'] else 'NO'}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
