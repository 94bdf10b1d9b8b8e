"""Split a causal LM at a decoder layer, with a KV cache on each side, as two ONNX files.

::

    device.onnx: input_ids, past_key_i/past_value_i (its layers)  -> hidden_states, present_key_i/present_value_i
    server.onnx: hidden_states, past_key_j/past_value_j (its layers) -> logits, present_key_j/present_value_j

Only ``hidden_states`` crosses the link for each new token; each side keeps its own cache.
Verified by greedy-generating 32 tokens through the pair in onnxruntime and matching the
unsplit PyTorch model token for token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from aiflow_cli import __version__
from aiflow_cli.errors import InputError, VerificationError
from aiflow_cli.export.pair import pair_dirname, save_artifact
from aiflow_cli.export.tensors import dynamic_axes
from aiflow_cli.models.kv_layers import KVDecoderLayer, KVDevice, KVServer
from aiflow_cli.models.kv_onnx import Positional
from aiflow_cli.models.segmented import SegmentedModel
from aiflow_cli.models.speculative import empty_past
from aiflow_cli.onnx_io import OPSET, export_onnx
from aiflow_cli.schemas.manifest import (
    CodecInfo,
    ExportedPair,
    Manifest,
    TensorDecl,
    Verification,
)

__all__ = ["export_lm_split", "verify_lm_pair", "LMPairRunner", "VERIFY_PROMPTS", "VERIFY_TOKENS", "eos_ids",
           "greedy_reference"]

VERIFY_TOKENS = 32
VERIFY_PROMPTS = ["The capital of France is", "Edge servers and mobile devices can share one language model by"]


def _layer_count(model: SegmentedModel, cut: str) -> int:
    """Decoder layers on the device for this cut (embeddings only = 0)."""
    index = model.cut_index(cut)
    if index == len(model.cuts) - 1 and not cut.startswith("layer"):
        raise InputError(f"cut '{cut}' is not a decoder-layer cut")
    return index  # cuts: embeddings, layer0, layer1, ... -> layers on the device == index


def _kv_decls(prefix: str, layers: range, kv_heads: int, head_dim: int, length: str) -> list[TensorDecl]:
    decls = []
    for i in layers:
        for kind in ("key", "value"):
            decls.append(TensorDecl(name=f"{prefix}_{kind}_{i}", shape=["batch", kv_heads, length, head_dim],
                                    dtype="float32"))
    return decls


@torch.no_grad()
def _export_one(model: SegmentedModel, cut: str, root: Path) -> ExportedPair:
    hf = model.extras["hf_model"]
    cfg = hf.config
    base = hf.model
    n_dev = _layer_count(model, cut)
    kv_heads = cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    layers = [KVDecoderLayer(layer, base.rotary_emb) for layer in base.layers]
    device = KVDevice(base.embed_tokens, layers[:n_dev]).eval()
    server = KVServer(layers[n_dev:], base.norm, hf.lm_head).eval()
    n_layers = len(layers)

    ids = torch.tensor([[1, 2, 3]])
    dev_past = [torch.zeros(1, kv_heads, 2, head_dim) for _ in range(2 * n_dev)]
    srv_past = [torch.zeros(1, kv_heads, 2, head_dim) for _ in range(2 * (n_layers - n_dev))]
    hidden = device(ids, *dev_past)[0]

    seq = ["batch", "sequence"]
    ids_decl = TensorDecl(name="input_ids", shape=seq, dtype="int64")
    hid_decl = TensorDecl(name="hidden_states", shape=[*seq, cfg.hidden_size], dtype="float32")
    logits_decl = TensorDecl(name="logits", shape=[*seq, cfg.vocab_size], dtype="float32")
    dev_in = [ids_decl, *_kv_decls("past", range(n_dev), kv_heads, head_dim, "past_sequence")]
    dev_out = [hid_decl, *_kv_decls("present", range(n_dev), kv_heads, head_dim, "total_sequence")]
    srv_in = [hid_decl, *_kv_decls("past", range(n_dev, n_layers), kv_heads, head_dim, "past_sequence")]
    srv_out = [logits_decl, *_kv_decls("present", range(n_dev, n_layers), kv_heads, head_dim, "total_sequence")]

    sub = pair_dirname(cut)
    dev_proto = export_onnx(Positional(device), (ids, *dev_past), [d.name for d in dev_in], [d.name for d in dev_out],
                            dynamic_axes(dev_in + dev_out))
    srv_proto = export_onnx(Positional(server), (hidden, *srv_past), [d.name for d in srv_in],
                            [d.name for d in srv_out], dynamic_axes(srv_in + srv_out))
    return ExportedPair.model_construct(  # a draft: validated once its verification is filled in
        cut=cut, cut_index=model.cut_index(cut), directory=sub,
        codec=CodecInfo(name="fp32", params={"wire_dtype": "float32"}),
        device=save_artifact(root, f"{sub}/device.onnx", dev_proto, dev_in, dev_out),
        server=save_artifact(root, f"{sub}/server.onnx", srv_proto, srv_in, srv_out),
        crossing=[hid_decl], kv_cache=True, bytes_per_request=None, predicted_latency_ms={}, exits=[],
        verification=None,
    )




class LMPairRunner:
    """Greedy decoding through device.onnx and server.onnx, each keeping its own KV cache."""

    def __init__(self, root: Path, pair: ExportedPair) -> None:
        from aiflow_cli.ort import ort_session

        self.pair = pair
        self.device = ort_session(Path(root) / pair.device.file)
        self.server = ort_session(Path(root) / pair.server.file)

    @staticmethod
    def _empty(decls: list[TensorDecl]) -> dict[str, np.ndarray]:
        return empty_past(decls)

    def generate(self, input_ids: np.ndarray, max_new_tokens: int, eos: int | set[int] | None = None
                 ) -> tuple[list[int], np.ndarray, int]:
        """(new tokens, logits of the prompt's last position, bytes of hidden states sent); stops
        after an end-of-sequence token, as transformers' ``generate`` does."""
        stop = {eos} if isinstance(eos, int) else set(eos or ())
        dev_past = self._empty(self.pair.device.inputs[1:])
        srv_past = self._empty(self.pair.server.inputs[1:])
        step, tokens, first_logits, sent = input_ids, [], None, 0
        for _ in range(max_new_tokens):
            dev_out = self.device.run(None, {"input_ids": step, **dev_past})
            hidden = dev_out[0]
            sent += hidden.nbytes
            dev_past = {d.name: v for d, v in zip(self.pair.device.inputs[1:], dev_out[1:])}
            srv_out = self.server.run(None, {"hidden_states": hidden, **srv_past})
            srv_past = {d.name: v for d, v in zip(self.pair.server.inputs[1:], srv_out[1:])}
            logits = srv_out[0][:, -1]
            if first_logits is None:
                first_logits = logits
            nxt = int(logits.argmax(-1)[0])
            tokens.append(nxt)
            if nxt in stop:
                break
            step = np.array([[nxt]], dtype=np.int64)
        return tokens, first_logits, sent


@torch.no_grad()
def verify_lm_pair(model: SegmentedModel, root: Path, pair: ExportedPair) -> Verification:
    runner = LMPairRunner(root, pair)
    hf = model.extras["hf_model"]
    agree, total, max_diff, scale = 0, 0, 0.0, 0.0
    same = True
    for prompt in VERIFY_PROMPTS:
        ids = model.tokenizer(prompt, return_tensors="pt")["input_ids"]
        ref_tokens = greedy_reference(model, ids, VERIFY_TOKENS)
        ours, first_logits, _ = runner.generate(ids.numpy(), VERIFY_TOKENS, eos=eos_ids(model))
        ref_logits = hf(ids).logits[:, -1].numpy()
        max_diff = max(max_diff, float(np.abs(first_logits - ref_logits).max()))
        scale = max(scale, float(np.abs(ref_logits).max()))
        agree += sum(int(a == b) for a, b in zip(ours, ref_tokens))
        total += max(len(ref_tokens), len(ours))
        same = same and ours == ref_tokens
    return Verification(reference="the unsplit model (transformers generate, greedy)",
                        inputs=f"greedy {VERIFY_TOKENS} tokens from {len(VERIFY_PROMPTS)} prompts", count=total,
                        max_abs_diff=max_diff, output_scale=scale, agreement=agree / total, passed=same)


def eos_ids(model: SegmentedModel) -> set[int]:
    """Every token id at which transformers' greedy ``generate`` stops for this model."""
    eos = model.extras["hf_model"].generation_config.eos_token_id
    if eos is None:
        eos = model.tokenizer.eos_token_id
    return set(eos) if isinstance(eos, (list, tuple)) else ({eos} if eos is not None else set())


@torch.no_grad()
def greedy_reference(model: SegmentedModel, ids: torch.Tensor, max_new_tokens: int) -> list[int]:
    """transformers' own greedy decoding (stops at end of sequence): the reference for any split."""
    hf = model.extras["hf_model"]
    out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                      pad_token_id=model.tokenizer.pad_token_id or model.tokenizer.eos_token_id)
    return out[0, ids.shape[1]:].tolist()


def export_lm_split(model: SegmentedModel, cuts: list[str], out_dir: Path, force: bool = False,
                    progress: Callable[[str, int, int], None] | None = None) -> Manifest:
    from aiflow_cli.export.api import source_model_of
    from aiflow_cli.staging import staged_dir

    for cut in cuts:
        _layer_count(model, cut)
    with staged_dir(Path(out_dir), force) as tmp:
        pairs, failures = [], []
        for n, cut in enumerate(cuts):
            pair = _export_one(model, cut, tmp)
            pair = ExportedPair.model_validate({**dict(pair), "verification": verify_lm_pair(model, tmp, pair)})
            if not pair.verification.passed:
                failures.append(f"{cut}: token agreement {pair.verification.agreement:.3f}")
            pairs.append(pair)
            if progress:
                progress("export + verify", n + 1, len(cuts))
        if failures:
            raise VerificationError(f"{len(failures)} pair(s) failed verification, nothing written: " + "; ".join(failures))
        manifest = Manifest(
            aiflow_version=__version__,
            source_model=source_model_of(model), opset=OPSET, pairs=pairs,
        )
        (tmp / "manifest.json").write_text(json.dumps(manifest.model_dump(mode="json"), indent=1) + "\n")
    return manifest
