"""Calibrate a codec at every cut and measure what it sends and what it costs in fidelity.

Calibration uses training data; bytes, timing and agreement use evaluation data (see
``export.reference_inputs``). Agreement is top-1 agreement of the model finished from the
decoded activation with the unsplit model (cosine for embeddings).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from aiflow_cli.codecs import ActivationCodec, make_codec
from aiflow_cli.models.reference_inputs import real_inputs
from aiflow_cli.models.segmented import SegmentedModel
from aiflow_cli.tensors import nbytes_of, tensors_of

__all__ = ["CutCodec", "evaluate_codec"]


@dataclass
class CutCodec:
    cut: str
    codec: ActivationCodec
    fp32_bytes: float  # per input
    wire_bytes: float  # per input, as packed for the link
    encode_ms: float  # per input
    decode_ms: float
    agreement: float | None  # None when lossless (not measured: identical by construction)

    @property
    def ratio(self) -> float:
        return self.wire_bytes / self.fp32_bytes


def _first(value: Any) -> torch.Tensor:
    return tensors_of(value)[0]


def _replace_first(value: Any, t: torch.Tensor) -> Any:
    return (t, *value[1:]) if isinstance(value, tuple) else t


def _activations(model: SegmentedModel, batches: list[Any]) -> list[list[Any]]:
    """acts[cut][batch]: the value crossing each cut, for each batch."""
    acts: list[list[Any]] = [[] for _ in model.cuts]
    with torch.no_grad():
        for x in batches:
            h = x
            for i, seg in enumerate(model.segments[:-1]):
                h = seg.module(h)
                acts[i].append(h)
    return acts


@torch.no_grad()
def evaluate_codec(model: SegmentedModel, codec_name: str, calibration: int = 16, evaluation: int = 20,
                   cut_indices: list[int] | None = None) -> list[CutCodec]:
    make_codec(codec_name)  # reject a bad name before any work
    calib, _ = real_inputs(model, "calibration", calibration)
    evals, _ = real_inputs(model, "verification", evaluation)
    calib_acts, eval_acts = _activations(model, calib), _activations(model, evals)
    references = [model.whole(x) for x in evals]
    indices = range(len(model.cuts)) if cut_indices is None else cut_indices
    results = []
    for i in indices:
        codec = make_codec(codec_name)
        codec.calibrate([_first(a) for a in calib_acts[i]])
        enc_t, dec_t, wire, fp32, agree, total, cosines = [], [], 0, 0, 0, 0, []
        device_mod, server_mod = codec.device_module(), codec.server_module()
        for act, ref in zip(eval_acts[i], references):
            parts = []
            for k in range(_first(act).shape[0]):  # one input at a time: a request carries one
                t0 = time.perf_counter()
                packed = codec.pack(device_mod(_first(act)[k:k + 1]).numpy())
                t1 = time.perf_counter()
                parts.append(server_mod(torch.from_numpy(codec.unpack(packed).copy())))
                enc_t.append(t1 - t0)
                dec_t.append(time.perf_counter() - t1)
                wire += len(packed.data)
            restored = torch.cat(parts)
            wire += nbytes_of(act) - nbytes_of(_first(act))  # e.g. the attention mask, sent as is
            fp32 += nbytes_of(act)
            if not codec.lossless:
                out = model.run_chain(_replace_first(act, restored), start=i + 1)
                if model.task == "sentence-embedding":
                    cosines.extend(torch.nn.functional.cosine_similarity(out, ref, dim=-1).tolist())
                else:
                    agree += int((out.argmax(-1) == ref.argmax(-1)).sum())
                    total += int(ref.argmax(-1).numel())
        count = sum(_first(a).shape[0] for a in eval_acts[i])
        agreement = None if codec.lossless else (agree / total if total else statistics.mean(cosines))
        results.append(CutCodec(cut=model.cuts[i], codec=codec, fp32_bytes=fp32 / count, wire_bytes=wire / count,
                                encode_ms=statistics.median(enc_t) * 1e3, decode_ms=statistics.median(dec_t) * 1e3,
                                agreement=agreement))
    return results
