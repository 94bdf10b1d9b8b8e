"""Text bottlenecks per token (issue 13, item 4): MiniLM at every layer cut, SmolLM2 at layer 15.

For each (model, cut) this runs what ``aiflow split bottleneck MODEL --cut C`` runs: train the
codec on WikiText-2 valid (first 3/4 of its windows), choose beta and the uniform quantiser's step
on the last 1/4, report on WikiText-2 test. It writes one JSON report and one plot per run into
OUT, and prints Markdown tables for docs/benchmarks.md.

    .venv/bin/python benchmarks/text_bottleneck.py OUT [--minilm-cuts layer0,...,layer5] [--smollm2-cut layer15] [--reuse] [--decode]

Exits 1 unless, on test, MiniLM at its best cut keeps mean cosine >= 0.99 at <= 0.5x the bytes
per token of int8+zstd, and SmolLM2 at layer 15 keeps next-token agreement >= 0.95 at <= 0.5x.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import torch

from aiflow_cli.models.zoo import load_zoo
from aiflow_cli.schemas.text_bottleneck import TextBottleneckReport
from aiflow_cli.split.bottleneck.plot import plot_text_rate
from aiflow_cli.split.bottleneck.text import (
    default_min_fidelity,
    default_text_betas,
    run_text_bottleneck,
)

RATIO_LIMIT = 0.5


def decode_bytes(model, cut: str, codec, out: Path, prompts: int = 8, new_tokens: int = 32) -> None:  # noqa: ANN001
    """Export the coded LM pair and greedy-decode WikiText-2 test prompts through it: bytes of the
    prompt's message per prompt token, and of each one-token decode step (header and coder word
    included), and how many generated tokens equal the unsplit model's greedy tokens."""
    from aiflow_cli.data.text import wikitext_sentences
    from aiflow_cli.export.lm_pair import (
        LMPairRunner,
        eos_ids,
        export_lm_split,
        greedy_reference,
    )

    manifest = export_lm_split(model, [cut], out / "coded-pair", force=True, codecs={cut: codec})
    pair = manifest.pairs[0]
    runner = LMPairRunner(out / "coded-pair", pair)
    prefill_bytes = prefill_tokens = step_bytes = steps = same = total = 0
    for text in wikitext_sentences("test", prompts) or []:
        ids = model.tokenizer(text, return_tensors="np")["input_ids"][:, :32]
        _, _, first = runner.generate(ids, 1)
        tokens, _, sent = runner.generate(ids, new_tokens, eos=eos_ids(model))
        prefill_bytes, prefill_tokens = prefill_bytes + first, prefill_tokens + ids.shape[1]
        step_bytes, steps = step_bytes + sent - first, steps + len(tokens) - 1
        ref = greedy_reference(model, torch.from_numpy(ids), new_tokens)
        prefix = next((i for i, (a, b) in enumerate(zip(tokens, ref)) if a != b), min(len(tokens), len(ref)))
        same, total = same + prefix, total + len(ref)
    print(f"\ncoded pair at {cut} ({pair.verification.reference}: passed={pair.verification.passed}): prefill "
          f"{prefill_bytes / prefill_tokens:.1f} B/token over {prefill_tokens} prompt tokens; decode "
          f"{step_bytes / max(steps, 1):.1f} B per one-token step over {steps} steps; greedy tokens equal to the "
          f"unsplit model's before the first difference: {same}/{total}")


def run(zoo: str, cut: str, out: Path, reuse: bool, decode: bool = False) -> TextBottleneckReport:
    stem = f"{zoo}-{cut}"
    if reuse and (out / f"{stem}.json").is_file():
        return TextBottleneckReport.model_validate_json((out / f"{stem}.json").read_text())
    model = load_zoo(zoo)
    t0 = time.perf_counter()
    report, codecs = run_text_bottleneck(model, cut, list(default_text_betas(model)), default_min_fidelity(model))
    if decode and report.operating_point is not None:
        decode_bytes(model, cut, codecs[report.operating_point.beta], out)
    (out / f"{stem}.json").write_text(report.model_dump_json(indent=1) + "\n")
    plot_text_rate(report, out / f"{stem}.png")
    print(f"{stem}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return report


def row(r: TextBottleneckReport) -> str:
    op = r.operating_point
    assert op is not None
    f = op.test_fidelity
    uni = "-" if op.uniform_bytes_at_equal_fidelity is None else (
        f"{op.uniform_bytes_at_equal_fidelity:.1f} ({op.test_bytes_per_token / op.uniform_bytes_at_equal_fidelity:.2f}x)")
    return (f"| {r.model} | {r.cut} | {op.beta:g} | {op.test_bytes_per_token:.1f} | {f.value:.4f} "
            f"[{f.ci95[0]:.4f}, {f.ci95[1]:.4f}] | {op.fp16_bytes_per_token:.0f} | {op.int8_zstd_bytes_per_token:.1f} "
            f"| **{op.ratio_to_int8_zstd:.2f}x** | {uni} |")


def meets(r: TextBottleneckReport) -> bool:
    op = r.operating_point
    return op is not None and op.test_fidelity.value >= r.min_fidelity and op.ratio_to_int8_zstd <= RATIO_LIMIT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--minilm-cuts", default="layer0,layer1,layer2,layer3,layer4,layer5")
    ap.add_argument("--smollm2-cut", default="layer15")
    ap.add_argument("--decode", action="store_true", help="also export the SmolLM2 pair at its operating point "
                    "(OUT/coded-pair) and measure prefill and decode bytes per token through it")
    ap.add_argument("--reuse", action="store_true", help="read a (model, cut) from OUT where its JSON is there already")
    args = ap.parse_args()
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    minilm = [run("minilm-l6", c, args.out, args.reuse) for c in args.minilm_cuts.split(",") if c]
    smol = [run("smollm2-135m", args.smollm2_cut, args.out, args.reuse, args.decode)] if args.smollm2_cut else []
    print(f"`{' '.join(sys.argv)}` on {platform.node()} ({platform.processor() or platform.machine()}), "
          f"{datetime.date.today()}; WikiText-2 valid trains (3/4) and chooses (1/4), test reports\n")
    print("| model | cut | beta | bytes/token | test fidelity [95% CI] | fp16 | int8+zstd | learned / int8+zstd "
          "| uniform at equal fidelity |")
    print("| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    for r in minilm + smol:
        print(row(r))
    ok = True
    if minilm:
        qualified = [r for r in minilm if meets(r)]
        best = min(qualified or minilm, key=lambda r: r.operating_point.test_bytes_per_token)  # type: ignore[union-attr]
        print(f"\nMiniLM best cut: {best.cut} ({'meets' if qualified else 'misses'} cosine >= 0.99 at <= "
              f"{RATIO_LIMIT}x int8+zstd on test)")
        ok = ok and bool(qualified)
    for r in smol:
        print(f"SmolLM2 at {r.cut}: {'meets' if meets(r) else 'misses'} agreement >= 0.95 at <= {RATIO_LIMIT}x "
              "int8+zstd on test")
        ok = ok and meets(r)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
