"""Before / after optimum (issue #29): the same models through aiflow's own path and through optimum.

1. MiniLM-L6 dynamic int8. Before: onnxruntime's ``optimize_model(model_type="bert", opt_level=1)``
   and ``quantize_dynamic(per_channel=True)`` called by hand (what ``compress`` did up to 2026-12-07).
   After: ``ORTOptimizer`` and ``ORTQuantizer`` (this CPU's ``AutoQuantizationConfig``) with the shipped
   recipe's settings, what ``compress`` does now; plain O2 as a third row. Both start from the same exported fp32 graph; the four graphs are timed in
   alternating blocks at batch 8 x 128 tokens (all cores); each int8 model's ratio is to its own fused
   fp32 baseline, as the compress report computes it; cosine to the torch model on 256 WikiText-2
   test lines.
2. SmolLM2-135M decode with a KV cache. Before: aiflow's KV graph (``past_key_i``, TorchScript
   exporter). After: optimum's ``text-generation-with-past``. A 64-token prompt then 64 greedy tokens
   one per call, one thread, alternating; the two greedy outputs must be identical.

It can fail: exit 1 when the optimum MiniLM ratio is more than 5% above the hand-called one, when its
cosine is under 0.99, or when the two SmolLM2 graphs decode different tokens.

    .venv/bin/python benchmarks/optimum_exports.py [--blocks 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "minilm-l6-int8-dynamic.yaml"


def _time_blocks(sessions: dict, feeds: dict, blocks: int, per_block: int) -> dict[str, list[float]]:
    """Median ms per block for each session, the sessions alternating within every block."""
    for s in sessions.values():
        s.run(None, feeds)
    out: dict[str, list[float]] = {n: [] for n in sessions}
    for _ in range(blocks):
        for name, s in sessions.items():
            ts = []
            for _ in range(per_block):
                t0 = time.perf_counter()
                s.run(None, feeds)
                ts.append((time.perf_counter() - t0) * 1e3)
            out[name].append(statistics.median(ts))
    return out


def minilm(blocks: int) -> dict:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    from aiflow_cli.compress import optimum_ort
    from aiflow_cli.compress.tasks import task_kit
    from aiflow_cli.models import load_model
    from aiflow_cli.ort import ort_session

    from aiflow_cli.schemas.recipe import QuantizeDynamic, load_recipe

    stage = next(s for s in load_recipe(RECIPE).stages if isinstance(s, QuantizeDynamic))
    model = load_model("zoo:minilm-l6")
    kit = task_kit(model, None)
    cfg = kit.hf_config()
    target = optimum_ort.host_quantization_target()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        onnx.save(kit.export(model.whole), str(d / "fp32.onnx"))
        hand = optimize_model(str(d / "fp32.onnx"), model_type="bert", num_heads=cfg.num_attention_heads,
                              hidden_size=cfg.hidden_size, opt_level=1)
        hand.save_model_to_file(str(d / "hand_fp32.onnx"))
        quantize_dynamic(str(d / "hand_fp32.onnx"), str(d / "hand_int8.onnx"), per_channel=True,
                         weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        fused = optimum_ort.optimize(d / "fp32.onnx", d / "optimum_fp32.onnx", cfg, stage.optimization,
                                     stage.optimization_options)
        quantize_dynamic_figures = optimum_ort.quantize_dynamic(d / "optimum_fp32.onnx", d / "optimum_int8.onnx",
                                                                target, stage.per_channel)
        optimum_ort.optimize(d / "fp32.onnx", d / "plain_fp32.onnx", cfg, "O2")
        optimum_ort.quantize_dynamic(d / "plain_fp32.onnx", d / "plain_int8.onnx", target, True)
        names = ["hand_fp32", "hand_int8", "optimum_fp32", "optimum_int8", "plain_fp32", "plain_int8"]
        sessions = {n: ort_session(d / f"{n}.onnx") for n in names}
        ms = _time_blocks(sessions, kit.latency_feeds(), blocks, 8)
        original = kit.torch_runner(model.whole)
        cos = {n: kit.metric(lambda f, s=sessions[n]: s.run(None, f)[0], original, 256) for n in names}
    ratio = {p: statistics.median(a / b for a, b in zip(ms[f"{p}_int8"], ms[f"{p}_fp32"]))
             for p in ("hand", "optimum", "plain")}
    return {"target": target, "recipe_stage": stage.model_dump(mode="json"), "fused_ops": fused["fused_ops"], "optimum_config": quantize_dynamic_figures["optimum_config"],
            "ms": {n: round(statistics.median(v), 2) for n, v in ms.items()},
            "ratio": {k: round(v, 4) for k, v in ratio.items()},
            "cosine": {n: round(c.value, 6) for n, c in cos.items()},
            "min_cosine": {n: round(float(c.extra["min_cosine"]), 4) for n, c in cos.items()}}


def smollm2(blocks: int) -> dict:
    import numpy as np

    from aiflow_cli.models import load_model
    from aiflow_cli.models.inputs import token_input
    from aiflow_cli.models.kv_onnx import kv_lm_onnx_file
    from aiflow_cli.models.optimum_export import export_causal_lm_with_past, graph_decls
    from aiflow_cli.models.speculative import KVSession

    model = load_model("zoo:smollm2-135m")
    hf = model.extras["hf_model"]
    prompt = token_input(1, 64, model.tokenizer.vocab_size)[0].tolist()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        ours_in, _ = kv_lm_onnx_file(hf, d / "ours.onnx", "torchscript")
        t1 = time.perf_counter()
        theirs = export_causal_lm_with_past(hf, d / "optimum")
        t2 = time.perf_counter()
        lms = {"aiflow": KVSession.open(d / "ours.onnx", ours_in, threads=1),
               "optimum": KVSession.open(theirs, graph_decls(theirs)[0], threads=1)}
        tokens: dict[str, list[int]] = {}
        per_token: dict[str, list[float]] = {n: [] for n in lms}
        for _ in range(blocks):
            for name, lm in lms.items():
                lm.reset()
                logits = lm.feed(prompt)[-1]
                out = []
                t = time.perf_counter()
                for _ in range(64):
                    out.append(int(np.argmax(logits)))
                    logits = lm.feed([out[-1]])[-1]
                per_token[name].append((time.perf_counter() - t) * 1e3 / 64)
                tokens[name] = out
    return {"export_s": {"aiflow (torchscript)": round(t1 - t0, 1), "optimum": round(t2 - t1, 1)},
            "decode_ms_per_token": {n: round(statistics.median(v), 2) for n, v in per_token.items()},
            "same_tokens": tokens["aiflow"] == tokens["optimum"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not 1 <= args.blocks <= 50:
        parser.error("--blocks must be in 1..50")
    result = {"date": datetime.date.today().isoformat(), "machine": platform.node(),
              "minilm": minilm(args.blocks), "smollm2": smollm2(args.blocks)}
    m, s = result["minilm"], result["smollm2"]
    print(f"MiniLM dynamic int8, batch 8 x 128 ({m['target']}; fused {', '.join(m['fused_ops'])}):")
    print("| path | fp32 fused ms | int8 ms | paired ratio | mean cosine (min) |\n|---|---:|---:|---:|---:|")
    for p, label in (("hand", "onnxruntime by hand (before)"),
                     ("optimum", f"optimum, the recipe's settings ({m['recipe_stage']['optimization']} "
                                 f"{m['recipe_stage']['optimization_options']}) + ORTQuantizer"),
                     ("plain", "optimum, plain O2 + ORTQuantizer")):
        print(f"| {label} | {m['ms'][f'{p}_fp32']} | {m['ms'][f'{p}_int8']} | {m['ratio'][p]:.3f}x | "
              f"{m['cosine'][f'{p}_int8']:.4f} ({m['min_cosine'][f'{p}_int8']:.4f}) |")
    print(f"SmolLM2-135M decode, 1 thread: aiflow graph {s['decode_ms_per_token']['aiflow']} ms/token, optimum "
          f"{s['decode_ms_per_token']['optimum']} ms/token; export {s['export_s']}; same greedy tokens: {s['same_tokens']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    failed = (m["ratio"]["optimum"] > 1.05 * m["ratio"]["hand"] or m["cosine"]["optimum_int8"] < 0.99
              or not s["same_tokens"])
    print("FAIL" if failed else "ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
