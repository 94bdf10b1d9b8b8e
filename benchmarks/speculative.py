"""The speculative-decoding study: TPOT against the draft length k at 0.5, 1 and 2 MB/s (RTT 20 ms)
on Spec-Bench prompts, with server-only, device-only and co-located baselines in the same run and
the cost model's prediction beside every point; then the same curve projected onto the paper's
hardware (labelled projected).

Steps, each an aiflow command (printed as it runs):

1. the draft: ``aiflow compress --recipe recipes/smollm2-135m-draft.yaml`` (unless --draft names one);
2. the pair: ``aiflow split speculative --draft DRAFT --target TARGET [--weights int4] --export WORK/pair``;
3. the study: ``aiflow serve-pair bench WORK/pair --speculative`` (server and device pinned to
   separate cores, one thread each).

Prints the Markdown for docs/benchmarks.md; writes WORK/study.json, study.csv and study.png.
Exits 1 when a point's prediction misses the measurement by more than 15%.

    .venv/bin/python benchmarks/speculative.py [--work /tmp/aiflow-spec] [--draft DIR] [--prompts 8] [--new-tokens 32]
    .venv/bin/python benchmarks/speculative.py --work /tmp/aiflow-qwen --draft zoo:qwen2.5-coder-0.5b \
        --target zoo:qwen2.5-coder-1.5b --weights int4 --ks 1,2,4,8,16,24 --prompts 4
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

LINKS = ["0.5MB/s,20ms", "1MB/s,20ms", "2MB/s,20ms"]
REPO = Path(__file__).resolve().parents[1]


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def pass_ms(onnx_path: Path, profile: Path, runtime: str, tokens: int) -> float:
    """Projected ms for one decode pass of ``tokens`` new tokens through a KV-cached graph on the
    hardware in ``profile``: its MatMul weights read once (the embedding table is gathered, not
    read), 2 x weights x tokens MACs at the profile's efficiency, and every graph node as one
    kernel at the runtime's per-kernel + host cost. A roofline with launch overheads: projected."""
    import onnx
    from onnx import numpy_helper

    from aiflow_cli.schemas.hardware import load_hardware

    hw = load_hardware(profile)
    rt = hw.runtimes[runtime]
    model = onnx.load(str(onnx_path))
    gathered = {n.input[0] for n in model.graph.node if n.op_type == "Gather"}
    weight_bytes = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer if t.name not in gathered)
    memory_s = weight_bytes / hw.memory_bandwidth_bytes_per_s
    macs = 2 * weight_bytes * tokens  # 4-bit weights: two per byte, one MAC each per token
    compute_s = macs / (hw.peak_macs_per_s * hw.efficiency)
    # as the profile's runtime model: device and host launch costs overlap, plus one per call
    kernels_s = len(model.graph.node) * max(rt.per_kernel_us, rt.host_per_kernel_us) * 1e-6 + rt.per_call_us * 1e-6
    return (max(memory_s, compute_s) + kernels_s) * 1e3


def projected(study: dict, export: Path, device: Path, server: Path, runtime: str = "cuda-graph") -> list[dict]:
    """The measured acceptance per k with projected draft and verify costs on other hardware."""
    from aiflow_cli.models.speculative import expected_tokens

    draft_ms = pass_ms(export / "speculative" / "draft.onnx", device, runtime, 1)
    verify = {k: pass_ms(export / "speculative" / "target.onnx", server, runtime, k + 1)
              for k in {p["k"] for p in study["points"] if p["k"] != "auto"}}
    target_ms = pass_ms(export / "speculative" / "target.onnx", server, runtime, 1)
    rows = []
    for p in study["points"]:
        if p["k"] == "auto":
            continue
        link = next(b for b in study["baselines"] if b["link"] == p["link"])["link"]
        rate, rtt = link.split(",")
        rate_bps = float(rate.removesuffix("MB/s")) * 1e6
        round_ms = p["k"] * draft_ms + verify[p["k"]] + float(rtt.removesuffix("ms")) \
            + (p["request_bytes_per_round"] + 740) / rate_bps * 1e3
        rows.append({"link": p["link"], "k": p["k"], "tpot_ms": round_ms / expected_tokens(p["acceptance"], p["k"]),
                     "server_only_ms": target_ms, "draft_ms": draft_ms, "verify_ms": verify[p["k"]]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/aiflow-spec"))
    ap.add_argument("--draft", default=None, help="the draft: a folder from aiflow compress or a zoo model "
                                                  "(default: build the SmolLM2 draft with the shipped recipe)")
    ap.add_argument("--target", default="zoo:smollm2-135m")
    ap.add_argument("--weights", default="fp32", help="fp32 or int4 (the Qwen pair: int4)")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--ks", default="1,2,3,4,6,8,12,16,24")
    ap.add_argument("--skip-export", action="store_true", help="reuse WORK/pair")
    args = ap.parse_args()
    aiflow = str(Path(sys.executable).with_name("aiflow"))
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    draft = args.draft or str(work / "draft")
    if args.draft is None and not (work / "draft" / "compressed.json").is_file():
        run([aiflow, "compress", "--recipe", str(REPO / "recipes" / "smollm2-135m-draft.yaml"), "--out", str(draft)])
    if not args.skip_export:
        run([aiflow, "split", "speculative", "--draft", draft, "--target", args.target, "--weights", args.weights,
             "--export", str(work / "pair"), "--force"])
    out = work / "study.json"
    cmd = [aiflow, "serve-pair", "bench", str(work / "pair"), "--speculative", "--ks", args.ks,
           "--prompts", str(args.prompts), "--new-tokens", str(args.new_tokens), "--out", str(out),
           "--plot", str(work / "study.png")]
    for link in LINKS:
        cmd += ["--link", link]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)
    study = json.loads(out.read_text())
    with open(work / "study.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["link", "k", "tpot_ms", "predicted_tpot_ms", "error", "acceptance", "tokens_per_round",
                         "request_bytes_per_round", "server_only_tpot_ms"])
        base = {b["link"]: b["server_only_tpot_ms"] for b in study["baselines"]}
        for p in study["points"]:
            writer.writerow([p["link"], p["k"], f"{p['tpot_ms']:.2f}", f"{p['predicted_tpot_ms']:.2f}",
                             f"{p['error']:+.3f}", f"{p['acceptance']:.3f}", f"{p['tokens_per_round']:.3f}",
                             f"{p['request_bytes_per_round']:.0f}", f"{base[p['link']]:.2f}"])
    links = [b["link"] for b in study["baselines"]]
    print(f"\n{study['draft']} -> {study['target']}, {study['prompts']} Spec-Bench prompts x {study['new_tokens']} "
          f"tokens, {study['machine']}, {study['date']}\n")
    print("| k | " + " | ".join(f"{link} TPOT ms (model, error)" for link in links) + " | acceptance |")
    print("| ---: | " + " | ".join("---:" for _ in links) + " | ---: |")
    for k in [*sorted({p["k"] for p in study["points"] if p["k"] != "auto"}), "auto"]:
        cells = []
        for link in links:
            p = next(q for q in study["points"] if q["link"] == link and q["k"] == k)
            cells.append(f"{p['tpot_ms']:.1f} ({p['predicted_tpot_ms']:.1f}, {100 * p['error']:+.0f}%)")
        acc = next(q for q in study["points"] if q["k"] == k)["acceptance"]
        print(f"| {k} | " + " | ".join(cells) + f" | {acc:.2f} |")
    print("| server-only | " + " | ".join(f"{b['server_only_tpot_ms']:.1f}" for b in study["baselines"]) + " | |")
    print(f"\ndevice-only {study['device_only_tpot_ms']:.1f} ms/token (agreement {study['device_only_agreement']:.2f}); "
          "co-located " + ", ".join(f"k={k} {v:.1f}" for k, v in study["colocated_tpot_ms"].items()) + " ms/token")
    for link in links:
        print(f"{link}: best k {study['best_k'][link]}, crossover k {study['crossover_k'][link]}")
    worst = max(abs(p["error"]) for p in study["points"])
    print(f"worst prediction error {worst:.0%}")
    rows = projected(study, work / "pair", REPO / "profiles/devices/rtx-4090-desktop.yaml",
                     REPO / "profiles/servers/a100-edge.yaml")
    print(f"\nProjected (not measured) onto an RTX 4090 device and an A100 server, CUDA graphs, with the measured "
          f"acceptance per k: draft {rows[0]['draft_ms']:.2f} ms/token, server-only {rows[0]['server_only_ms']:.2f} "
          "ms/token (the target alone, one pass per token)\n")
    print("| k | " + " | ".join(f"{link} TPOT ms, projected" for link in links) + " | verify ms, projected |")
    print("| ---: | " + " | ".join("---:" for _ in links) + " | ---: |")
    for k in sorted({r["k"] for r in rows}):
        cells = [f"{next(r for r in rows if r['link'] == link and r['k'] == k)['tpot_ms']:.1f}" for link in links]
        print(f"| {k} | " + " | ".join(cells) + f" | {next(r for r in rows if r['k'] == k)['verify_ms']:.2f} |")
    (work / "projected.json").write_text(json.dumps(rows, indent=1) + "\n")
    sys.exit(0 if worst <= 0.15 else 1)


if __name__ == "__main__":
    main()
