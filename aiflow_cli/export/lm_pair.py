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
from torch import nn

from aiflow_cli import __version__
from aiflow_cli.codecs.base import ActivationCodec
from aiflow_cli.codecs.entropy import EntropyTables
from aiflow_cli.codecs.learned import LearnedBottleneckCodec
from aiflow_cli.codecs.registry import codec_of
from aiflow_cli.errors import InputError, VerificationError
from aiflow_cli.export.pair import pair_dirname, save_artifact
from aiflow_cli.export.tensors import dynamic_axes
from aiflow_cli.models.kv_halves import kv_halves
from aiflow_cli.models.kv_onnx import Positional
from aiflow_cli.models.segmented import SegmentedModel
from aiflow_cli.models.speculative import empty_past
from aiflow_cli.onnx_io import OPSET, Exporter, export_onnx
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


class _CodedDevice(nn.Module):
    """The device half with the bottleneck's encoder after it: token symbols leave, not hidden states."""

    def __init__(self, device: nn.Module, encode: nn.Module) -> None:
        super().__init__()
        self.device, self.encode = device, encode

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.device(input_ids, *past)
        return (self.encode(out[0]), *out[1:])


class _CodedServer(nn.Module):
    def __init__(self, decode: nn.Module, server: nn.Module) -> None:
        super().__init__()
        self.decode, self.server = decode, server

    def forward(self, symbols: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.server(self.decode(symbols), *past)


def _halves(model: SegmentedModel, cut: str, codec: ActivationCodec | None = None) -> tuple[nn.Module, nn.Module]:
    """(device, server) PyTorch modules with explicit KV caches; with a learned codec, its encoder
    ends the device half and its decoder starts the server half (the pair's training graph)."""
    device, server = kv_halves(model.extras["hf_model"], _layer_count(model, cut))
    if codec is None:
        return device, server
    return _CodedDevice(device, codec.device_module()).eval(), _CodedServer(codec.server_module(), server).eval()


@torch.no_grad()
def _export_one(model: SegmentedModel, cut: str, root: Path, codec: LearnedBottleneckCodec | None = None,
                exporter: Exporter = "dynamo") -> ExportedPair:
    cfg = model.extras["hf_model"].config
    n_dev = _layer_count(model, cut)
    kv_heads = cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    device, server = _halves(model, cut, codec)
    n_layers = cfg.num_hidden_layers

    ids = torch.tensor([[1, 2, 3]])
    dev_past = [torch.zeros(1, kv_heads, 2, head_dim) for _ in range(2 * n_dev)]
    srv_past = [torch.zeros(1, kv_heads, 2, head_dim) for _ in range(2 * (n_layers - n_dev))]
    hidden = device(ids, *dev_past)[0]

    seq = ["batch", "sequence"]
    ids_decl = TensorDecl(name="input_ids", shape=seq, dtype="int64")
    hid_decl = (TensorDecl(name="hidden_states", shape=[*seq, cfg.hidden_size], dtype="float32") if codec is None
                else TensorDecl(name="symbols", shape=[*seq, codec.net.channels], dtype="int32"))
    logits_decl = TensorDecl(name="logits", shape=[*seq, cfg.vocab_size], dtype="float32")
    dev_in = [ids_decl, *_kv_decls("past", range(n_dev), kv_heads, head_dim, "past_sequence")]
    dev_out = [hid_decl, *_kv_decls("present", range(n_dev), kv_heads, head_dim, "total_sequence")]
    srv_in = [hid_decl, *_kv_decls("past", range(n_dev, n_layers), kv_heads, head_dim, "past_sequence")]
    srv_out = [logits_decl, *_kv_decls("present", range(n_dev, n_layers), kv_heads, head_dim, "total_sequence")]

    sub = pair_dirname(cut)
    info = CodecInfo(name="fp32", params={"wire_dtype": "float32"})
    if codec is not None:
        (root / sub).mkdir(parents=True, exist_ok=True)
        codec.write_weights(root / sub)
        spec = codec.spec()
        info = CodecInfo(name=spec.name, params=spec.params)
    dev_proto = export_onnx(Positional(device), (ids, *dev_past), [d.name for d in dev_in], [d.name for d in dev_out],
                            dynamic_axes(dev_in + dev_out), exporter=exporter)
    srv_proto = export_onnx(Positional(server), (hidden, *srv_past), [d.name for d in srv_in],
                            [d.name for d in srv_out], dynamic_axes(srv_in + srv_out), exporter=exporter)
    return ExportedPair.model_construct(  # a draft: validated once its verification is filled in
        cut=cut, cut_index=model.cut_index(cut), directory=sub,
        codec=info,
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
        self.codec = codec_of(pair)

    def run_device(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.device.run(None, feeds)

    def run_server(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.server.run(None, feeds)

    @staticmethod
    def _empty(decls: list[TensorDecl]) -> dict[str, np.ndarray]:
        return empty_past(decls)

    def generate(self, input_ids: np.ndarray, max_new_tokens: int, eos: int | set[int] | None = None
                 ) -> tuple[list[int], np.ndarray, int]:
        """(new tokens, logits of the prompt's last position, bytes sent: the codec's message per
        step); stops after an end-of-sequence token, as transformers' ``generate`` does."""
        stop = {eos} if isinstance(eos, int) else set(eos or ())
        dev_past = self._empty(self.pair.device.inputs[1:])
        srv_past = self._empty(self.pair.server.inputs[1:])
        step, tokens, first_logits, sent = input_ids, [], None, 0
        for _ in range(max_new_tokens):
            dev_out = self.run_device({"input_ids": step, **dev_past})
            message = self.codec.pack(dev_out[0])
            sent += len(message.data)
            dev_past = {d.name: v for d, v in zip(self.pair.device.inputs[1:], dev_out[1:])}
            srv_out = self.run_server({self.pair.crossing[0].name: self.codec.unpack(message), **srv_past})
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


class _TrainingGraphRunner(LMPairRunner):
    """The same greedy loop through the PyTorch modules the pair was exported from (with a learned
    codec: its training graph, rounding included); what a coded pair must reproduce token for token."""

    def __init__(self, pair: ExportedPair, device: nn.Module, server: nn.Module, codec: ActivationCodec) -> None:
        self.pair, self.codec = pair, codec
        self._device_module, self._server_module = device, server

    @staticmethod
    def _run(module: nn.Module, decls: list[TensorDecl], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            out = module(*[torch.from_numpy(np.ascontiguousarray(feeds[d.name])) for d in decls])
        return [t.numpy() for t in out]

    def run_device(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._run(self._device_module, self.pair.device.inputs, feeds)

    def run_server(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._run(self._server_module, self.pair.server.inputs, feeds)


@torch.no_grad()
def verify_lm_pair(model: SegmentedModel, root: Path, pair: ExportedPair) -> Verification:
    """fp32 pairs: token-identical to the unsplit model's greedy ``generate``. Pairs with a learned
    bottleneck are lossy by design, so they must reproduce their training graph (the PyTorch halves
    with the trained codec, rebuilt from the weights beside the pair) token for token."""
    if pair.codec.name == "learned-bottleneck":
        return _verify_coded_lm_pair(model, root, pair)
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


def _verify_coded_lm_pair(model: SegmentedModel, root: Path, pair: ExportedPair) -> Verification:
    net = LearnedBottleneckCodec.load_net(pair.codec.params, Path(root) / pair.directory)
    codec = LearnedBottleneckCodec(net, EntropyTables.from_params(pair.codec.params))  # the manifest's tables
    device, server = _halves(model, pair.cut, codec)
    graph = _TrainingGraphRunner(pair, device, server, codec)
    runner = LMPairRunner(root, pair)
    agree, total, max_diff, scale, same, sent = 0, 0, 0.0, 0.0, True, 0
    for prompt in VERIFY_PROMPTS:
        ids = model.tokenizer(prompt, return_tensors="pt")["input_ids"].numpy()
        ref_tokens, ref_logits, _ = graph.generate(ids, VERIFY_TOKENS, eos=eos_ids(model))
        ours, first_logits, nbytes = runner.generate(ids, VERIFY_TOKENS, eos=eos_ids(model))
        sent += nbytes
        max_diff = max(max_diff, float(np.abs(first_logits - ref_logits).max()))
        scale = max(scale, float(np.abs(ref_logits).max()))
        agree += sum(int(a == b) for a, b in zip(ours, ref_tokens))
        total += max(len(ref_tokens), len(ours))
        same = same and ours == ref_tokens
    return Verification(reference="the training graph (PyTorch halves + the trained bottleneck with rounding, "
                                  "greedy with a KV cache), not the unsplit model",
                        inputs=f"greedy {VERIFY_TOKENS} tokens from {len(VERIFY_PROMPTS)} prompts "
                               f"({sent / max(total, 1):.0f} coded bytes per token sent)",
                        count=total, max_abs_diff=max_diff, output_scale=scale, agreement=agree / total, passed=same)


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
                    progress: Callable[[str, int, int], None] | None = None,
                    codecs: dict[str, LearnedBottleneckCodec] | None = None,
                    exporter: Exporter = "dynamo") -> Manifest:
    from aiflow_cli.export.api import source_model_of
    from aiflow_cli.staging import staged_dir

    for cut in cuts:
        _layer_count(model, cut)
    with staged_dir(Path(out_dir), force) as tmp:
        pairs, failures = [], []
        for n, cut in enumerate(cuts):
            pair = _export_one(model, cut, tmp, (codecs or {}).get(cut), exporter)
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
