"""Greedy decoding through an exported SmolLM2 pair against transformers' ``generate``, on Spec-Bench.

Exports the pair at ``--cut`` with ``--exporter`` (default: dynamo, aiflow's default), then for
each of the first ``--prompts`` Spec-Bench prompts (first 48 tokens) decodes ``--tokens`` greedy
tokens through device.onnx -> server.onnx (each side with its own KV cache, in onnxruntime) and
compares them with transformers' own greedy output of the unsplit model (``generate``). End of
sequence does not stop either side (a base model often ends a truncated prompt at once, which
would compare one token), so every prompt compares all ``--tokens``. Exits 1 on any difference.

    .venv/bin/python benchmarks/lm_pair_specbench.py [--cut layer15] [--exporter dynamo] [--prompts 8] [--tokens 32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="zoo:smollm2-135m")
    ap.add_argument("--cut", default="layer15")
    ap.add_argument("--exporter", default="dynamo")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32)
    args = ap.parse_args()

    import torch
    from transformers import GenerationConfig

    from aiflow_cli.data.specbench import read_prompts
    from aiflow_cli.export.lm_pair import LMPairRunner, export_lm_split
    from aiflow_cli.models import load_model

    model = load_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        manifest = export_lm_split(model, [args.cut], Path(tmp) / "pair", exporter=args.exporter)
        pair = manifest.pairs[0]
        print(f"exported {args.model} at {args.cut} in {time.perf_counter() - t0:.0f} s; device.onnx by "
              f"{pair.device.exporter}, server.onnx by {pair.server.exporter}")
        runner = LMPairRunner(Path(tmp) / "pair", pair)
        same = 0
        for k, prompt in enumerate(read_prompts(args.prompts)):
            ids = model.tokenizer(prompt.text, return_tensors="pt")["input_ids"][:, :48]
            # an end-of-sequence id no token has: generate() would put the model's own back for None
            config = GenerationConfig(max_new_tokens=args.tokens, do_sample=False,
                                      eos_token_id=model.extras["hf_model"].config.vocab_size,
                                      pad_token_id=model.tokenizer.pad_token_id or 0)
            with torch.no_grad():
                out = model.extras["hf_model"].generate(ids, attention_mask=torch.ones_like(ids),
                                                        generation_config=config)
            expected = out[0, ids.shape[1]:].tolist()
            tokens, _, _ = runner.generate(ids.numpy(), args.tokens, eos=None)
            same += tokens == expected
            print(f"prompt {k} ({prompt.category}): {len(tokens)} tokens, "
                  f"{'identical' if tokens == expected else 'DIFFERENT'} to transformers' generate")
    print(f"{same} of {args.prompts} prompts token-identical over {args.tokens} greedy tokens")
    return 0 if same == args.prompts else 1


if __name__ == "__main__":
    sys.exit(main())
