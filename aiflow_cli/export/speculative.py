"""Export a draft / target pair for speculative decoding across the link.

::

    DIR/speculative/draft.onnx    (device)  input_ids, attention_mask, position_ids, past_key_values.N.key/value
                                            -> logits, present.N.key/value (optimum's text-generation-with-past)
    DIR/speculative/target.onnx   (server)  the same interface, the target's layers
    DIR/manifest.json             the pair, the draft's and target's weights, the shared tokenizer's hash

Only token ids (and, when sampling, the draft's sparse distribution) cross the link. The two
models must share one tokenizer: a draft whose token -> id map differs from the target's is
refused (its proposals would name other tokens).

Verified before anything is written: the target's ONNX graph greedy-decodes exactly as
transformers does, and speculative greedy decoding through both graphs gives the target-only
output token for token.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable, cast

import onnx

from aiflow_cli import __version__
from aiflow_cli.compress.int8_weights import quantize_int8_streaming
from aiflow_cli.compress.quantize import quantize_int4_stage
from aiflow_cli.errors import InputError, VerificationError
from aiflow_cli.export.api import source_model_of
from aiflow_cli.export.lm_pair import (
    VERIFY_PROMPTS,
    VERIFY_TOKENS,
    eos_ids,
    greedy_reference,
)
from aiflow_cli.export.pair import artifact_of, save_artifact
from aiflow_cli.hashing import vocabulary_sha256
from aiflow_cli.models.kv_onnx import kv_lm_onnx, kv_lm_onnx_file
from aiflow_cli.models.segmented import SegmentedModel
from aiflow_cli.models.speculative import (
    Drafter,
    KVSession,
    LocalVerifier,
    decode_alone,
    speculate,
)
from aiflow_cli.models.optimum_export import export_causal_lm_with_past, graph_decls
from aiflow_cli.onnx_io import OPSET, Exporter
from aiflow_cli.schemas.manifest import (
    Artifact,
    CodecInfo,
    ExportedPair,
    Manifest,
    SourceModel,
    SpeculativeInfo,
    Verification,
)
from aiflow_cli.schemas.recipe import QuantizeInt4
from aiflow_cli.staging import staged_dir

__all__ = ["export_speculative", "verify_speculative", "tokenizer_sha256", "check_same_vocabulary", "check_same_tokenizer", "SPECULATIVE_DIR", "TOKENIZER_DIR", "VERIFY_K"]

SPECULATIVE_DIR = "speculative"
TOKENIZER_DIR = "tokenizer"  # the shared tokenizer travels with the pair (the device encodes prompts)
VERIFY_K = 4


def tokenizer_sha256(tokenizer) -> str:  # noqa: ANN001 - a transformers tokenizer
    """sha256 over the token -> id map (what both halves must agree on)."""
    return vocabulary_sha256(tokenizer.get_vocab())


def check_same_tokenizer(draft, target) -> None:  # noqa: ANN001 - transformers tokenizers
    """Refuse two tokenizers whose vocabularies differ, naming the first id where they do."""
    dv, tv = draft.get_vocab(), target.get_vocab()
    if dv != tv:
        by_id_d = {i: t for t, i in dv.items()}
        by_id_t = {i: t for t, i in tv.items()}
        first = next((i for i in sorted(set(by_id_d) | set(by_id_t)) if by_id_d.get(i) != by_id_t.get(i)), None)
        raise InputError(f"the draft's and the target's vocabularies differ ({len(dv):,} vs {len(tv):,} tokens; "
                         f"first difference at id {first}: {by_id_d.get(first)!r} vs {by_id_t.get(first)!r})",
                         "pick a draft trained with the target's tokenizer (same model family)")


def check_same_vocabulary(draft: SegmentedModel, target: SegmentedModel) -> None:
    """Refuse a pair whose tokenizers or output vocabularies differ, naming the first difference."""
    for role, model in (("draft", draft), ("target", target)):
        if model.task != "causal-lm" or "hf_model" not in model.extras:
            raise InputError(f"--{role} {model.spec} is a {model.task} model", "speculative decoding needs two causal LMs")
    check_same_tokenizer(draft.tokenizer, target.tokenizer)
    d_out = draft.extras["hf_model"].lm_head.out_features
    t_out = target.extras["hf_model"].lm_head.out_features
    if d_out != t_out:
        raise InputError(f"the draft scores {d_out:,} tokens and the target {t_out:,}",
                         "pick a draft with the target's output vocabulary")


WEIGHTS = ("fp32", "int8", "int4", "int4-f32")
INT4 = QuantizeInt4(kind="quantize", method="int4", algorithm="rtn", block_size=32, symmetric=True, accuracy_level=4)
# The same 4-bit weights with fp32 arithmetic (MatMulNBits accuracy_level 1). With int8 compute
# (level 4) the activations are quantised per pass, so a k-token verification and k one-token
# steps see different scales and the logits differ by up to ~0.2, enough to flip near-ties of
# greedy decoding; fp32 arithmetic leaves only summation-order differences. It costs 2-3x the
# compute on this CPU (the Qwen target: 202 against 95 ms for a 1-token pass, 1 thread).
INT4_F32 = INT4.model_copy(update={"accuracy_level": 1})


SPECULATIVE_EXPORTERS = ("optimum", "dynamo", "torchscript")


def _export_lm(model: SegmentedModel, root: Path, rel: str, weights: str, exporter: str) -> Artifact:
    """One KV-cached graph. ``optimum`` (the default) writes optimum's ``text-generation-with-past``
    layout; ``dynamo`` / ``torchscript`` write aiflow's own (``past_key_i`` / ``past_value_i``, no
    mask or positions). ``int8``: every MatMul weight (the LM head included) and the embedding int8
    per column / row, activations quantised per pass (``DynamicQuantizeMatMul``), streamed tensor by
    tensor (``compress.int8_weights``). ``int4``: every MatMul weight 4-bit (MatMulNBits, blocks of 32, int8
    compute; ``int4-f32``: fp32 compute), exported first in fp32 with external data (a 1.5B model
    is 7 GB in fp32, over protobuf's 2 GB), then quantised into one file."""
    hf = model.extras["hf_model"]
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    too_big = sum(p.numel() for p in hf.parameters()) * 4 >= 2**31
    if weights == "fp32" and too_big:
        raise InputError(f"{model.spec}: fp32 weights over protobuf's 2 GB limit", "export with --weights int4")
    if weights == "fp32" and exporter != "optimum":
        proto, inputs, outputs = kv_lm_onnx(hf, cast(Exporter, exporter))
        return save_artifact(root, rel, proto, inputs, outputs)
    with tempfile.TemporaryDirectory(dir=root, prefix=".float-") as work:
        if exporter == "optimum":
            fp32 = export_causal_lm_with_past(hf, Path(work))
            inputs, outputs = graph_decls(fp32)
        else:
            fp32 = Path(work) / "float.onnx"
            inputs, outputs = kv_lm_onnx_file(hf, fp32, cast(Exporter, exporter))
        if weights == "fp32":  # optimum's graph, under 2 GB: one file, weights inline
            onnx.save(onnx.load(str(fp32)), str(path))
        elif weights == "int8":
            quantize_int8_streaming(fp32, path)
        else:
            quantize_int4_stage(fp32, path, INT4_F32 if weights == "int4-f32" else INT4, None)
    return artifact_of(root, rel, inputs, outputs)


def _verify(draft_art: Artifact, target_art: Artifact, target: SegmentedModel, root: Path,
            weights: str = "fp32") -> Verification:
    """Speculative greedy == target-only ONNX greedy, and target-only ONNX greedy == transformers
    greedy when the graph keeps the model's weights (fp32); with 4-bit weights that agreement is
    measured and reported, not required. With int8 compute (``int4``) a k-token verification and k
    one-token steps round apart, so speculative greedy may leave the target's own at a near-tie:
    those prompts are counted (``flips``) and reported, not refused, since whether two check
    prompts happen to hit a near-tie says nothing about the export."""
    exact_reference, exact_speculation = weights == "fp32", weights not in ("int4", "int8")
    eos = eos_ids(target)
    target_lm = KVSession.open(root / target_art.file, target_art.inputs)
    draft_lm = KVSession.open(root / draft_art.file, draft_art.inputs)
    same, flips, agree, agree_hf, total, accepted, proposed = True, 0, 0, 0, 0, 0, 0
    for prompt in VERIFY_PROMPTS:
        ids = target.tokenizer(prompt, return_tensors="pt")["input_ids"]
        reference = greedy_reference(target, ids, VERIFY_TOKENS)
        alone = decode_alone(target_lm, ids[0].tolist(), VERIFY_TOKENS, eos=eos)
        target_lm.reset()
        draft_lm.reset()
        rounds = speculate(Drafter(draft_lm), LocalVerifier(target_lm), ids[0].tolist(), VERIFY_TOKENS, VERIFY_K, eos)
        agree += sum(int(a == b) for a, b in zip(rounds.tokens, alone))
        agree_hf += sum(int(a == b) for a, b in zip(alone, reference))
        total += max(len(alone), len(rounds.tokens))
        accepted, proposed = accepted + sum(rounds.accepted), proposed + sum(rounds.proposed)
        flips += int(rounds.tokens != alone)
        same = same and (rounds.tokens == alone or not exact_speculation) and (alone == reference or not exact_reference)
    reference_text = ("target-only greedy decoding (target.onnx alone, which matches transformers generate)"
                      if exact_reference else
                      f"target-only greedy decoding (target.onnx alone; its 4-bit weights agree with transformers' "
                      f"fp32 generate on {agree_hf / max(1, total):.3f} of the tokens)")
    return Verification(
        reference=reference_text,
        inputs=f"speculative greedy, k={VERIFY_K}, {VERIFY_TOKENS} tokens from {len(VERIFY_PROMPTS)} prompts "
               f"(draft acceptance {accepted / max(1, proposed):.2f})",
        count=total, max_abs_diff=0.0, output_scale=0.0, agreement=agree / total,
        flips=None if exact_speculation else flips, passed=same)


def verify_speculative(directory: Path, manifest: Manifest, target: SegmentedModel) -> Verification:
    """Re-run an export's check (``aiflow split verify``): speculative greedy through both graphs
    and the target graph alone against transformers' greedy decoding."""
    pair = manifest.pairs[0]
    return _verify(pair.device, pair.server, target, Path(directory), pair.codec.params.get("weights", "fp32"))


def export_speculative(draft: SegmentedModel, target: SegmentedModel, out_dir: Path, force: bool = False,
                       progress: Callable[[str, int, int], None] | None = None, weights: str = "fp32",
                       exporter: str = "optimum", draft_weights: str | None = None) -> Manifest:
    """Write draft.onnx, target.onnx and the manifest to ``out_dir`` (all or nothing). ``weights``:
    ``fp32`` keeps the models' weights; ``int4`` makes every MatMul 4-bit (MatMulNBits, int8
    arithmetic); ``int4-f32`` keeps the 4-bit weights but computes in fp32 (see ``INT4_F32``);
    ``int8`` quantises every MatMul and the embedding to int8. ``draft_weights`` (default: ``weights``)
    lets the draft take the cheapest one-token kernel while the target takes the one whose cost
    grows least with k; only the target's weights decide whether the output is exact."""
    draft_weights = draft_weights or weights
    for flag, value in (("--weights", weights), ("--draft-weights", draft_weights)):
        if value not in WEIGHTS:
            raise InputError(f"{flag} {value}: expected one of {', '.join(WEIGHTS)}")
    if exporter not in SPECULATIVE_EXPORTERS:
        raise InputError(f"--exporter must be one of {', '.join(SPECULATIVE_EXPORTERS)}, got '{exporter}'",
                         "optimum (the default) writes optimum's text-generation-with-past graph")
    check_same_vocabulary(draft, target)
    with staged_dir(Path(out_dir), force) as tmp:
        if progress:
            progress("export draft", 0, 3)
        draft_art = _export_lm(draft, tmp, f"{SPECULATIVE_DIR}/draft.onnx", draft_weights, exporter)
        if progress:
            progress("export target", 1, 3)
        target_art = _export_lm(target, tmp, f"{SPECULATIVE_DIR}/target.onnx", weights, exporter)
        if progress:
            progress("verify", 2, 3)
        verification = _verify(draft_art, target_art, target, tmp, weights)
        if not verification.passed:
            raise VerificationError(f"speculative decoding did not reproduce target-only greedy decoding "
                                    f"(token agreement {verification.agreement:.3f}); nothing written")
        ids = next(d for d in target_art.inputs if d.name == "input_ids")  # as the graphs declare it
        pair = ExportedPair(cut=SPECULATIVE_DIR, cut_index=0, directory=SPECULATIVE_DIR,
                            codec=CodecInfo(name="token-ids", params={"wire_dtype": "int64", "weights": weights,
                                                                          "draft_weights": draft_weights}),
                            device=draft_art, server=target_art, crossing=[ids], kv_cache=True,
                            verification=verification)
        cfg = target.extras["hf_model"].config
        manifest = Manifest(
            aiflow_version=__version__, source_model=source_model_of(target), opset=OPSET, pairs=[pair],
            speculative=SpeculativeInfo(
                draft_model=SourceModel(**source_model_of(draft).model_dump()),
                vocab_size=cfg.vocab_size, tokenizer_sha256=tokenizer_sha256(target.tokenizer),
                max_positions=int(getattr(cfg, "max_position_embeddings", 2048)), eos_ids=sorted(eos_ids(target))))
        target.tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
        (tmp / "manifest.json").write_text(json.dumps(manifest.model_dump(mode="json"), indent=1) + "\n")
        if progress:
            progress("verify", 3, 3)
    return manifest
