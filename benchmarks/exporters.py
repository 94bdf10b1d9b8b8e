"""Export time and outcome of the dynamo exporter against the TorchScript one, per zoo model.

For each zoo model, one verified pair is exported at a middle cut with each exporter, each run in a
fresh interpreter (the dynamo exporter pays a one-time start-up cost that a user of the command
pays too). Reported per run: seconds spent inside the exporter (device + server graph, measured
around each export call), seconds for the whole export (export + verification + manifest), which
exporter wrote each graph (a TorchScript fallback names why), node counts, and the verification
figure (max difference / agreement against the unsplit model, or the token agreement of the LM
pair's greedy decoding against transformers' own), and how fast the pair runs in onnxruntime (one
thread per side: ms per input, or per generated token for a causal LM).

The benchmark can fail: it exits 1 when any pair fails verification or any graph was written by a
fallback.

    .venv/bin/python benchmarks/exporters.py [--models efficientnet-lite0,minilm-l6,smollm2-135m] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CUTS = {"efficientnet-lite0": "block8", "minilm-l6": "layer3", "smollm2-135m": "layer15"}


def _one(model_name: str, exporter: str) -> dict:
    """Export one pair in this interpreter; time the exporter calls and the whole export."""
    import onnx

    import aiflow_cli.export.lm_pair as lm_pair
    import aiflow_cli.export.pair as pair
    from aiflow_cli.codecs import make_codec
    from aiflow_cli.export.api import export_split
    from aiflow_cli.export.lm_pair import export_lm_split
    from aiflow_cli.models import load_model

    spent: list[float] = []

    def timed(original):  # noqa: ANN001, ANN202
        def call(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent.append(time.perf_counter() - t0)
        return call

    pair.export_onnx = timed(pair.export_onnx)
    lm_pair.export_onnx = timed(lm_pair.export_onnx)
    model = load_model(f"zoo:{model_name}")
    cut = CUTS[model_name]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pair"
        t0 = time.perf_counter()
        if model.task == "causal-lm":
            manifest = export_lm_split(model, [cut], out, exporter=exporter)
        else:
            manifest = export_split(model, [cut], {cut: make_codec("fp32")}, out, triton=False, verify_count=20,
                                    exporter=exporter)
        total = time.perf_counter() - t0
        p = manifest.pairs[0]
        nodes = {side: len(onnx.load(str(out / getattr(p, side).file), load_external_data=False).graph.node)
                 for side in ("device", "server")}
        run_ms = _run_ms(model, out, p)
    v = p.verification
    return {"model": model_name, "cut": cut, "exporter": exporter, "export_s": round(sum(spent), 2),
            "total_s": round(total, 2), "written_by": {"device": p.device.exporter, "server": p.server.exporter},
            "nodes": nodes, "passed": v.passed, "max_abs_diff": v.max_abs_diff, "agreement": v.agreement,
            "mean_cosine": v.mean_cosine, "inputs": v.inputs, "run_ms": run_ms}


def _run_ms(model, root: Path, pair, repeats: int = 15) -> float:  # noqa: ANN001
    """Median ms of the pair in onnxruntime (device then server, one thread each): one input for
    image and encoder models, one greedy token (16-token prompt, 16 new tokens) for causal LMs."""
    import statistics

    import numpy as np

    from aiflow_cli.export.lm_pair import LMPairRunner
    from aiflow_cli.ort import ort_session
    from aiflow_cli.tensors import tensors_of

    if model.task == "causal-lm":
        runner = LMPairRunner(root, pair)
        ids = np.arange(100, 116, dtype=np.int64)[None, :]
        runner.generate(ids, 2)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            runner.generate(ids, 16)
            times.append((time.perf_counter() - t0) * 1e3 / 16)
        return round(statistics.median(times), 2)
    device, server = ort_session(root / pair.device.file, 1), ort_session(root / pair.server.file, 1)
    x = [t.numpy() for t in tensors_of(model.make_input(1, 16))]
    feeds = dict(zip([d.name for d in pair.device.inputs], x))
    times = []
    for i in range(repeats + 2):
        t0 = time.perf_counter()
        wire = device.run(None, feeds)
        server.run(None, dict(zip([d.name for d in pair.server.inputs], wire)))
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(times), 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(CUTS))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "EXPORTER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(_one(*args.one)))
        return 0
    rows = []
    for name in args.models.split(","):
        for exporter in ("torchscript", "dynamo"):
            run = subprocess.run([sys.executable, __file__, "--one", name, exporter], capture_output=True, text=True,
                                 timeout=1800)
            if run.returncode != 0:
                print(run.stderr[-3000:], file=sys.stderr)
                return 1
            rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
            print(rows[-1], file=sys.stderr, flush=True)
    print(f"command: {' '.join(sys.argv)}\nmachine: {platform.node()} ({platform.processor() or platform.machine()})"
          f"\ndate: {datetime.date.today()}\n")
    print("| model (cut) | exporter | exporter s | export + verify s | written by (device / server) | nodes "
          "(device / server) | pair run ms | verification |")
    print("|---|---|---:|---:|---|---|---:|---|")
    ok = True
    for r in rows:
        fig = (f"agreement {r['agreement']:.4f}" if r["agreement"] is not None
               else f"cosine {r['mean_cosine']:.6f}" if r["mean_cosine"] is not None else "")
        print(f"| {r['model']} ({r['cut']}) | {r['exporter']} | {r['export_s']:.1f} | {r['total_s']:.1f} | "
              f"{r['written_by']['device']} / {r['written_by']['server']} | {r['nodes']['device']} / "
              f"{r['nodes']['server']} | {r['run_ms']:.2f} | {'passed' if r['passed'] else 'FAILED'}: max diff {r['max_abs_diff']:.2e} "
              f"{fig} on {r['inputs']} inputs |")
        ok &= r["passed"] and all(w == r["exporter"] for w in r["written_by"].values())
    by = {(r["model"], r["exporter"]): r for r in rows}
    print()
    for name in args.models.split(","):
        ts, dy = by[(name, "torchscript")], by[(name, "dynamo")]
        print(f"- {name}: dynamo takes {dy['export_s'] / max(ts['export_s'], 1e-9):.1f}x the TorchScript exporter's "
              f"time ({dy['export_s']:.1f} s vs {ts['export_s']:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
