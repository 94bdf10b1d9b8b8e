"""The target of a speculative-decoding export as a v2 model: verifies the device's drafts against
its session's KV cache, one pass per round.

Request (``POST /v2/models/{name}/infer``)::

    inputs   input_ids      INT64 [1, n]   the committed tokens this session's cache has not seen
                                           (at least the last one), then the k drafts
             draft_support  INT32 [m]      sampling only: the supports of the k drafts' q, concatenated
             draft_probs    FP16  [m]      sampling only: their float16 probabilities
             draft_sizes    INT32 [k]      sampling only: the size of each support
    params   sequence_id, sequence_start, position (tokens the cache holds before this request),
             draft_count (k), temperature / top_p / top_k / seed (sampling),
             max_new_tokens (server-only generation: no drafts, the target decodes alone)
    outputs  accepted INT64 [1], next_token INT64 [1]   (or tokens INT64 [N] for server-only)

After a round the cache holds the committed prefix and the accepted drafts; the correction or
bonus token is the first unseen token of the next request. A round's random draws come from
``(seed, position)``, so a retried request answers the same.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from aiflow_cli.errors import InputError
from aiflow_cli.models.speculative import MAX_K, Sampling, lm_feeds, past_decls_of, verify_round
from aiflow_cli.ort import ort_session
from aiflow_cli.schemas.manifest import ExportedPair, SpeculativeInfo
from aiflow_cli.serve.server.halves import (
    ServedModel,
    SessionCache,
    check_inputs,
    crop,
    session_parameters,
)

__all__ = ["VerifierModel", "SAMPLING_INPUTS", "sampling_of"]

SAMPLING_INPUTS = ["draft_support", "draft_probs", "draft_sizes"]
MAX_SERVER_TOKENS = 4096


def _number(parameters: dict[str, Any], name: str, default: float, kind: type = float) -> Any:
    value = parameters.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise InputError(f"parameter '{name}' must be a {'whole ' if kind is int else ''}number")
    return kind(value)


def sampling_of(parameters: dict[str, Any]) -> tuple[Sampling, int]:
    """(the sampling settings, the seed) from request parameters."""
    sampling = Sampling(_number(parameters, "temperature", 0.0), _number(parameters, "top_p", 1.0),
                        _number(parameters, "top_k", 0, int))
    seed = _number(parameters, "seed", 0, int)
    if not 0 <= seed < 2**63:
        raise InputError(f"parameter 'seed' must be in 0..2**63-1, got {seed}")
    return sampling, seed


class VerifierModel(ServedModel):
    def __init__(self, root: Path, name: str, pair: ExportedPair, info: SpeculativeInfo, threads: int | None = None,
                 max_sessions: int = 64, idle_seconds: float = 300.0) -> None:
        super().__init__(name, pair,
                         [{"name": "input_ids", "datatype": "INT64", "shape": [1, -1]},
                          {"name": "draft_support", "datatype": "INT32", "shape": [-1]},
                          {"name": "draft_probs", "datatype": "FP16", "shape": [-1]},
                          {"name": "draft_sizes", "datatype": "INT32", "shape": [-1]}],
                         [{"name": "accepted", "datatype": "INT64", "shape": [1]},
                          {"name": "next_token", "datatype": "INT64", "shape": [1]},
                          {"name": "tokens", "datatype": "INT64", "shape": [-1]}])
        self.info = info
        self.session = ort_session(Path(root) / pair.server.file, threads)
        self.past_decls = past_decls_of(pair.server.inputs)
        self.input_names = frozenset(d.name for d in pair.server.inputs)
        self.cache = SessionCache(self.past_decls, max_sessions, idle_seconds)

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta["parameters"].update({"speculative": True, "vocab_size": self.info.vocab_size,
                                   "max_positions": self.info.max_positions, "max_k": MAX_K})
        return meta

    def _feed(self, session, ids: np.ndarray) -> np.ndarray:  # noqa: ANN001 - halves._Session
        outs = self.session.run(None, lm_feeds(self.input_names, ids.reshape(1, -1), session.past, session.position))
        session.past = {d.name: v for d, v in zip(self.past_decls, outs[1:])}
        session.position += ids.size
        return outs[0][0]

    def _ids(self, tensors: dict[str, np.ndarray]) -> np.ndarray:
        ids = tensors["input_ids"]
        if ids.dtype != np.int64 or ids.ndim != 2 or ids.shape[0] != 1 or ids.shape[1] < 1:
            raise InputError(f"input 'input_ids': expected INT64 [1, n >= 1], got {ids.dtype} {list(ids.shape)}")
        if ids.min() < 0 or ids.max() >= self.info.vocab_size:
            raise InputError(f"input 'input_ids': token ids must be in 0..{self.info.vocab_size - 1}")
        return ids[0]

    def _supports(self, tensors: dict[str, np.ndarray], k: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        support, probs, sizes = (tensors[n] for n in SAMPLING_INPUTS)
        if support.dtype != np.int32 or probs.dtype != np.float16 or sizes.dtype != np.int32:
            raise InputError("sampling inputs: draft_support INT32, draft_probs FP16, draft_sizes INT32")
        if sizes.shape != (k,) or support.shape != probs.shape or support.ndim != 1 or int(sizes.sum()) != support.size \
                or (sizes < 1).any():
            raise InputError(f"sampling inputs: draft_sizes must hold {k} positive sizes adding up to the "
                             f"{support.size} support entries")
        if support.min() < 0 or support.max() >= self.info.vocab_size or not (probs > 0).all() \
                or not np.isfinite(probs).all():
            raise InputError("sampling inputs: support ids out of the vocabulary or probabilities not positive")
        cuts = np.cumsum(sizes)[:-1]
        return np.split(support, cuts), np.split(probs, cuts)

    def infer(self, tensors: dict[str, np.ndarray], parameters: dict[str, Any]) -> tuple[dict[str, np.ndarray],
                                                                                          dict[str, Any]]:
        sid, start, position = session_parameters(parameters)
        sampling, seed = sampling_of(parameters)
        check_inputs(tensors, ["input_ids"] + (SAMPLING_INPUTS if set(SAMPLING_INPUTS) & set(tensors) else []))
        ids = self._ids(tensors)
        timing: dict[str, float] = {}  # the verification pass alone (the rest of aiflow_server_ms: rule, crop, locks)
        t0 = time.perf_counter()
        session = self.cache.get(sid, start)
        with session.lock:  # retries of one round arrive together: each crops back, then applies it once
            self.cache.continue_at(session, sid, position)
            if session.position + ids.size > self.info.max_positions:
                raise InputError(f"{session.position + ids.size} positions exceed the target's context of "
                                 f"{self.info.max_positions}", "shorten the prompt or generate fewer tokens")
            rng = np.random.default_rng([seed, session.position])
            if "max_new_tokens" in parameters:
                outputs = {"tokens": self._generate(session, ids, _number(parameters, "max_new_tokens", 1, int),
                                                    sampling, rng)}
            else:
                outputs, pass_ms = self._verify(session, tensors, ids, _number(parameters, "draft_count", 0, int),
                                                sampling, rng)
                timing["aiflow_pass_ms"] = round(pass_ms, 4)
            position_after = session.position  # read under the lock: a retry may crop it back at once
        if parameters.get("sequence_end", False):
            self.cache.close(sid)
        return outputs, {"aiflow_server_ms": round((time.perf_counter() - t0) * 1e3, 4), "position": position_after,
                         **timing}

    def _verify(self, session, tensors: dict[str, np.ndarray], ids: np.ndarray, k: int, sampling: Sampling,  # noqa: ANN001
                rng: np.random.Generator) -> tuple[dict[str, np.ndarray], float]:
        """(outputs, ms of the target's pass)."""
        if not 0 <= k <= min(MAX_K, ids.size - 1):
            raise InputError(f"parameter 'draft_count' {k} must be in 0..{min(MAX_K, ids.size - 1)} "
                             f"(at most {MAX_K}, and input_ids must hold at least one unseen committed token)")
        if sampling.greedy:
            supports, probs = [], []
        elif k and not set(SAMPLING_INPUTS) <= set(tensors):
            raise InputError("sampling needs the drafts' distributions", "send " + ", ".join(SAMPLING_INPUTS))
        else:
            supports, probs = self._supports(tensors, k) if k else ([], [])
        unseen = ids.size - k
        before = session.position
        t0 = time.perf_counter()
        logits = self._feed(session, ids)[unseen - 1:]
        pass_ms = (time.perf_counter() - t0) * 1e3
        accepted, token = verify_round(logits, ids[unseen:].tolist(), supports, probs, sampling, rng)
        crop(session, before + unseen + accepted)
        return ({"accepted": np.array([accepted], dtype=np.int64), "next_token": np.array([token], dtype=np.int64)},
                pass_ms)

    def _generate(self, session, ids: np.ndarray, count: int, sampling: Sampling,  # noqa: ANN001
                  rng: np.random.Generator) -> np.ndarray:
        """Server-only decoding (the baseline): the target alone, one token per pass."""
        if not 1 <= count <= MAX_SERVER_TOKENS or session.position + ids.size + count > self.info.max_positions:
            raise InputError(f"parameter 'max_new_tokens' {count} must be in 1..{MAX_SERVER_TOKENS} and fit the "
                             f"context of {self.info.max_positions}")
        eos = set(self.info.eos_ids)
        logits = self._feed(session, ids)[-1]
        tokens: list[int] = []
        while True:
            _, token = verify_round(logits[None], [], [], [], sampling, rng)
            tokens.append(token)
            if len(tokens) >= count or token in eos:
                return np.array(tokens, dtype=np.int64)
            logits = self._feed(session, np.array([token], dtype=np.int64))[-1]
