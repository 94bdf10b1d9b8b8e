"""Decode latency for causal LMs: what users of a 4-bit model care about is the time per new token
with a KV cache, not a 64-token prefill. Both graphs (before and after) are exported with the
cache by optimum and timed in alternation: a 64-token prompt, then 64 tokens one at a time."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import onnx
import torch

from aiflow_cli.compress import quantize
from aiflow_cli.compress.tasks import TaskKit
from aiflow_cli.models.inputs import token_input
from aiflow_cli.models.optimum_export import export_causal_lm_with_past, graph_decls
from aiflow_cli.models.speculative import KVSession
from aiflow_cli.schemas.manifest import TensorDecl
from aiflow_cli.schemas.recipe import QuantizeDynamic, QuantizeInt4, QuantizeStatic

__all__ = ["export_with_past", "decode_latency", "PROMPT_TOKENS", "NEW_TOKENS"]

PROMPT_TOKENS = 64
NEW_TOKENS = 64


def export_with_past(module: torch.nn.Module, out: Path, stages: list[Any], kit: TaskKit) -> tuple[list[TensorDecl],
                                                                                                     list[str]]:
    """Write ``module`` as a KV-cached graph to ``out`` (optimum's ``text-generation-with-past``, the
    graph users of ``ORTModelForCausalLM`` run), quantised by the recipe's quantize stages in order.
    (input declarations, notes): static int8 needs calibration feeds with a cache and is left in
    float, which the notes say."""
    current = out.with_suffix(".float.onnx")
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".optimum-") as work:
        exported = export_causal_lm_with_past(module, Path(work))
        inputs, _ = graph_decls(exported)
        onnx.save(onnx.load(str(exported)), str(current))  # one file (a small model: weights inline)
    notes = []
    for stage in stages:
        step = out.with_suffix(f".{len(notes)}.onnx")
        if isinstance(stage, QuantizeInt4):
            quantize.quantize_int4_stage(current, step, stage, kit)
        elif isinstance(stage, QuantizeDynamic):
            quantize.quantize_dynamic_stage(current, step, stage, kit)
        elif isinstance(stage, QuantizeStatic):
            notes.append("static int8 not applied to the cached graph (its calibration has no cache)")
            continue
        else:
            continue
        current.unlink()
        current = step
        notes.append(f"{stage.kind}/{stage.method}")
    current.replace(out)
    return inputs, notes


def _one_pass(lm: KVSession, prompt: list[int], new_tokens: int) -> tuple[float, float]:
    lm.reset()
    t0 = time.perf_counter()
    logits = lm.feed(prompt)[-1]
    t1 = time.perf_counter()
    for _ in range(new_tokens):
        logits = lm.feed([int(logits.argmax())])[-1]
    t2 = time.perf_counter()
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3 / new_tokens


def decode_latency(before: Path, after: Path, inputs_before: list[TensorDecl], inputs_after: list[TensorDecl],
                   vocab_size: int, repeats: int = 5) -> dict[str, float]:
    """Medians over ``repeats`` alternated passes (after one warm-up each): prefill ms and decode ms
    per token, before and after."""
    sessions = [KVSession.open(before, inputs_before), KVSession.open(after, inputs_after)]
    prompt = token_input(1, PROMPT_TOKENS, vocab_size)[0].tolist()
    for lm in sessions:
        _one_pass(lm, prompt, 4)
    runs: list[list[tuple[float, float]]] = [[], []]
    for _ in range(repeats):
        for k, lm in enumerate(sessions):
            runs[k].append(_one_pass(lm, prompt, NEW_TOKENS))
    return {f"{side}_{what}": round(statistics.median(r[i] for r in runs[k]), 4)
            for k, side in enumerate(("before", "after")) for i, what in enumerate(("prefill_ms", "decode_ms_per_token"))}
