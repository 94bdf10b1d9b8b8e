"""Speculative decoding, the parts both halves share: a KV-cached ONNX language model, the
sampling distribution, and the acceptance rules.

A round: the draft proposes ``k`` tokens ``d1..dk``; the target runs once over the tokens it
has not seen yet followed by the drafts, which gives its distribution after every prefix; the
first ``a`` drafts are kept and one more token comes from the target, so every round adds
``a + 1`` tokens (1 to ``k + 1``) for one target pass.

- Greedy (``temperature == 0``): keep drafts while each equals the target's argmax; the extra
  token is the target's argmax after the kept prefix. The output is the target's own greedy
  output, token for token.
- Sampling (Leviathan et al. 2023, "Fast Inference from Transformers via Speculative
  Decoding", algorithm 1): keep draft ``d`` with probability ``min(1, p(d) / q(d))``; at the
  first rejection draw from ``norm(max(0, p - q))`` and stop; if all ``k`` are kept draw the
  extra token from ``p``. The output has exactly the target's distribution. ``q`` is the
  distribution the draft *actually sampled from*: here its temperature-scaled distribution cut
  to top-p and top-k and renormalised, with probabilities rounded to float16 before sampling,
  so ``q`` is exactly sparse and travels as (token id, float16) pairs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from aiflow_cli.errors import InputError
from aiflow_cli.ort import ort_session
from aiflow_cli.schemas.manifest import TensorDecl

__all__ = ["Sampling", "GREEDY", "KVSession", "crop_past", "distribution", "sparse_distribution", "q_of", "verify_greedy",
           "verify_sampled", "verify_round", "draft_tokens", "Drafter", "LocalVerifier", "Rounds", "KPolicy", "FixedK", "AutoK",
           "expected_tokens", "speculate", "decode_alone", "empty_past", "MAX_K", "past_decls_of", "lm_feeds",
           "POSITION_INPUTS"]

MAX_K = 64
# The draft's and the target's random draws must be independent (a shared stream would tie the
# acceptance test to the draft's own choice): one seed, two streams.
DRAFT_STREAM, VERIFY_STREAM = 0, 1


@dataclass(frozen=True)
class Sampling:
    """``temperature`` 0 is greedy. ``top_p`` / ``top_k`` cut the distribution (1.0 / 0: no cut)."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.temperature) and self.temperature >= 0):
            raise InputError(f"temperature must be 0 (greedy) or more, got {self.temperature:g}")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top-p must be in (0, 1], got {self.top_p:g}")
        if self.top_k < 0:
            raise InputError(f"top-k must be 0 (no cut) or more, got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


GREEDY = Sampling()


def distribution(logits: np.ndarray, sampling: Sampling) -> np.ndarray:
    """The full-vocabulary distribution sampling draws from (float64): softmax(logits / T), cut to
    the smallest set whose mass reaches ``top_p`` (and to ``top_k``), renormalised."""
    z = logits.astype(np.float64) / sampling.temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    if sampling.top_p < 1 or sampling.top_k:
        order = np.argsort(-p, kind="stable")
        keep = int(np.searchsorted(np.cumsum(p[order]), sampling.top_p) + 1) if sampling.top_p < 1 else len(p)
        if sampling.top_k:
            keep = min(keep, sampling.top_k)
        cut = np.zeros_like(p)
        cut[order[:keep]] = p[order[:keep]]
        p = cut / cut.sum()
    return p


def sparse_distribution(logits: np.ndarray, sampling: Sampling) -> tuple[np.ndarray, np.ndarray]:
    """(token ids int32, probabilities float16) of the cut distribution: what the draft samples from
    and what it sends. The float16 values, renormalised, *are* q (see :func:`q_of`)."""
    p = distribution(logits, sampling)
    ids = np.flatnonzero(p).astype(np.int32)
    probs = p[ids].astype(np.float16)
    keep = probs > 0  # a probability below float16's smallest value is dropped, not sampled
    return ids[keep], probs[keep]


def q_of(probs: np.ndarray) -> np.ndarray:
    """The exact distribution of a sparse float16 support (both halves compute it the same way)."""
    q = probs.astype(np.float64)
    return q / q.sum()


def draft_tokens(ids: np.ndarray, probs: np.ndarray, rng: np.random.Generator) -> int:
    """One draw from a sparse distribution."""
    return int(ids[rng.choice(len(ids), p=q_of(probs))])


def verify_greedy(target_logits: np.ndarray, drafts: list[int]) -> tuple[int, int]:
    """(drafts accepted, the target's next token). ``target_logits`` (k + 1, V): the target's logits
    after the seen prefix and after each draft."""
    predicted = target_logits.argmax(-1)
    accepted = 0
    while accepted < len(drafts) and drafts[accepted] == int(predicted[accepted]):
        accepted += 1
    return accepted, int(predicted[accepted])


def verify_sampled(target_logits: np.ndarray, drafts: list[int], supports: list[np.ndarray],
                   probs: list[np.ndarray], sampling: Sampling, rng: np.random.Generator) -> tuple[int, int]:
    """(drafts accepted, the next token) by the rejection rule; ``supports[i]``/``probs[i]`` are the
    sparse q the i-th draft was drawn from."""
    for i, d in enumerate(drafts):
        p = distribution(target_logits[i], sampling)
        q = np.zeros_like(p)
        q[supports[i]] = q_of(probs[i])
        if q[d] > 0 and rng.random() < min(1.0, p[d] / q[d]):
            continue
        residual = np.maximum(p - q, 0.0)
        total = residual.sum()
        # total == 0 only when p == q, where a rejection has probability 0; draw from p then
        token = rng.choice(len(p), p=residual / total if total > 0 else p)
        return i, int(token)
    return len(drafts), int(rng.choice(target_logits.shape[-1], p=distribution(target_logits[len(drafts)], sampling)))


def verify_round(target_logits: np.ndarray, drafts: list[int], supports: list[np.ndarray], probs: list[np.ndarray],
                 sampling: Sampling, rng: np.random.Generator) -> tuple[int, int]:
    """(drafts accepted, the next token) by the rule ``sampling`` calls for."""
    if sampling.greedy:
        return verify_greedy(target_logits, drafts)
    return verify_sampled(target_logits, drafts, supports, probs, sampling, rng)


# Inputs an optimum ``text-generation-with-past`` graph takes besides the ids and the cache;
# aiflow's own KV graphs compute both from the cache's length.
POSITION_INPUTS = ("attention_mask", "position_ids")


def past_decls_of(inputs: list[TensorDecl]) -> list[TensorDecl]:
    """The cache inputs of a KV-cached LM, in the graph's order (``past_key_i``/``past_value_i`` in
    aiflow's graphs, ``past_key_values.N.key/value`` in optimum's): the graph returns the grown
    cache in the same order after ``logits``."""
    return [d for d in inputs if d.name not in ("input_ids", "hidden_states", *POSITION_INPUTS)]


def lm_feeds(input_names: set[str] | frozenset[str], ids: np.ndarray, past: dict[str, np.ndarray],
             past_length: int) -> dict[str, np.ndarray]:
    """One pass's feeds for ``ids`` (1, n) on top of a cache of ``past_length`` positions, with the
    mask and positions an optimum graph wants (an unpadded batch of one: all ones, past + arange)."""
    feeds = {"input_ids": ids, **past}
    n = ids.shape[1]
    if "attention_mask" in input_names:
        feeds["attention_mask"] = np.ones((1, past_length + n), dtype=np.int64)
    if "position_ids" in input_names:
        feeds["position_ids"] = np.arange(past_length, past_length + n, dtype=np.int64)[None]
    return feeds


def empty_past(decls: list[TensorDecl]) -> dict[str, np.ndarray]:
    """An empty KV cache (length 0) for the declared cache inputs, batch 1 (other inputs ignored)."""
    return {d.name: np.zeros((1, d.shape[1], 0, d.shape[3]), dtype=np.float32) for d in past_decls_of(decls)}


def crop_past(past: dict[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
    """A KV cache (batch x heads x positions x head dim per tensor) cut to its first ``length``
    positions: what a verified or retried step keeps."""
    return {k: v[:, :, :length] for k, v in past.items()}


class KVSession:
    """An ONNX causal LM (``input_ids`` + past key/values -> ``logits`` + present) with its own cache.
    Several sessions may share one onnxruntime session (a server: one model, a cache per client).
    Reads both aiflow's KV layout and optimum's (see :func:`past_decls_of`)."""

    def __init__(self, session, inputs: list[TensorDecl]) -> None:  # noqa: ANN001 - onnxruntime.InferenceSession
        self.session = session
        self.past_decls = past_decls_of(inputs)
        self.input_names = frozenset(d.name for d in inputs)
        self.reset()

    @classmethod
    def open(cls, path: Path, inputs: list[TensorDecl], threads: int | None = None) -> "KVSession":
        return cls(ort_session(Path(path), threads), inputs)

    def reset(self) -> None:
        self.past = empty_past(self.past_decls)
        self.length = 0

    def feed(self, ids: list[int]) -> np.ndarray:
        """Run ``ids`` on top of the cache; (len(ids), V) logits; the cache grows by len(ids)."""
        feeds = lm_feeds(self.input_names, np.asarray([ids], dtype=np.int64), self.past, self.length)
        outs = self.session.run(None, feeds)
        self.past = {d.name: v for d, v in zip(self.past_decls, outs[1:])}
        self.length += len(ids)
        return outs[0][0]

    def crop(self, length: int) -> None:
        """Forget everything after the first ``length`` positions."""
        if length < self.length:
            self.past = crop_past(self.past, length)
            self.length = length


class Drafter:
    """The draft side of the rounds: proposes ``k`` tokens from what is committed, keeps its cache
    in step with what the target accepted."""

    def __init__(self, draft: KVSession, sampling: Sampling = GREEDY, seed: int = 0) -> None:
        self.draft, self.sampling = draft, sampling
        self.rng = np.random.default_rng([seed, DRAFT_STREAM])

    def propose(self, committed: list[int], k: int) -> tuple[list[int], list[np.ndarray], list[np.ndarray]]:
        """(drafts, supports, probabilities): the draft's cache catches up on ``committed``, then
        it proposes ``k`` tokens one at a time (greedy: empty supports)."""
        drafts: list[int] = []
        supports: list[np.ndarray] = []
        probs: list[np.ndarray] = []
        if k == 0:
            return drafts, supports, probs
        self.draft.crop(min(self.draft.length, len(committed) - 1))  # at least the last token is fed again
        logits = self.draft.feed(committed[self.draft.length:])[-1]
        for i in range(k):
            if self.sampling.greedy:
                token = int(logits.argmax())
            else:
                ids, p = sparse_distribution(logits, self.sampling)
                token = draft_tokens(ids, p, self.rng)
                supports.append(ids)
                probs.append(p)
            drafts.append(token)
            if i < k - 1:
                logits = self.draft.feed([token])[-1]
        return drafts, supports, probs

    def keep(self, committed_before: int, accepted: int) -> None:
        """Forget the rejected drafts: the cache keeps the committed prefix and the accepted drafts."""
        self.draft.crop(min(self.draft.length, committed_before + accepted))


class LocalVerifier:
    """The target in the same process (export checks, the co-located baseline)."""

    def __init__(self, target: KVSession, sampling: Sampling = GREEDY, seed: int = 0) -> None:
        self.target, self.sampling = target, sampling
        self.rng = np.random.default_rng([seed, VERIFY_STREAM])

    def verify(self, committed: list[int], drafts: list[int], supports: list[np.ndarray],
               probs: list[np.ndarray]) -> tuple[int, int]:
        self.target.crop(min(self.target.length, len(committed) - 1))
        unseen = committed[self.target.length:]
        logits = self.target.feed(unseen + drafts)[len(unseen) - 1:]
        accepted, token = verify_round(logits, drafts, supports, probs, self.sampling, self.rng)
        self.target.crop(len(committed) + accepted)
        return accepted, token


@dataclass
class Rounds:
    tokens: list[int]
    accepted: list[int] = field(default_factory=list)  # drafts accepted per round
    proposed: list[int] = field(default_factory=list)  # drafts proposed per round
    draft_ms: list[float] = field(default_factory=list)  # drafting time per round
    verify_ms: list[float] = field(default_factory=list)  # verification time per round (a round trip when remote)
    seconds: float = 0.0
    ahead_used: int = 0  # rounds whose drafts were made while the previous verification was in flight

    @property
    def acceptance(self) -> float:
        """Share of proposed drafts accepted."""
        return sum(self.accepted) / max(1, sum(self.proposed))

    @property
    def ms_per_token(self) -> float:
        """Time per output token (TPOT) over the whole generation, the prompt's first round included."""
        return self.seconds * 1e3 / max(1, len(self.tokens))


class KPolicy(Protocol):
    """Chooses the number of drafts for the next round and learns from each round."""

    def choose(self) -> int: ...

    def observe(self, k: int, accepted: int, draft_ms: float, verify_ms: float) -> None: ...


class FixedK:
    def __init__(self, k: int) -> None:
        self.k = k

    def choose(self) -> int:
        return self.k

    def observe(self, k: int, accepted: int, draft_ms: float, verify_ms: float) -> None:
        pass


def expected_tokens(alpha: float, k: int) -> float:
    """Tokens a round of ``k`` drafts yields when each draft is accepted with probability ``alpha``
    (independently, until the first rejection), the target's own token included:
    1 + alpha + ... + alpha^k."""
    return float(k + 1) if alpha >= 1 else (1 - alpha ** (k + 1)) / (1 - alpha)


class AutoK:
    """``--k auto``: each round, the k in 1..``k_max`` with the most expected tokens per second.

    Expected tokens come from the running per-draft acceptance (a Beta(2, 2) prior updated by
    every round: the accepted drafts are successes, a rejection one failure); the round's time is
    ``k x draft ms per token + verify(k)``, with ``verify(k) = a + b k`` fitted by least squares to
    the measured verification times (a round trip when remote: link delay, transfer and the
    target's pass). It learns from decode rounds only (a generation's first round carries the
    prompt, whose verification costs a prefill), and its first two observed rounds probe k = 2 and
    k = 8 so the fit has two points. Keep one policy across generations: it keeps learning.
    """

    def __init__(self, k_max: int = 16, probes: tuple[int, ...] = (2, 8)) -> None:
        self.k_max = k_max
        self.probes = [min(p, k_max) for p in probes]
        self.successes, self.failures = 2.0, 2.0
        self.draft_ms_per_token: list[float] = []
        self.verify: list[tuple[int, float]] = []

    @property
    def alpha(self) -> float:
        return self.successes / (self.successes + self.failures)

    def verify_ms(self, k: int) -> float:
        ks = np.array([p[0] for p in self.verify[-32:]], dtype=np.float64)
        ms = np.array([p[1] for p in self.verify[-32:]], dtype=np.float64)
        if len(set(ks.tolist())) < 2:
            return float(ms.mean())
        slope, intercept = np.polyfit(ks, ms, 1)
        return float(intercept + max(0.0, slope) * k)

    def predicted_ms_per_token(self, k: int) -> float:
        draft = float(np.median(self.draft_ms_per_token[-32:]))
        return (k * draft + self.verify_ms(k)) / expected_tokens(self.alpha, k)

    def choose(self) -> int:
        if len(self.verify) < len(self.probes):
            k = self.probes[len(self.verify)]
        else:
            k = min(range(1, self.k_max + 1), key=self.predicted_ms_per_token)
        return k

    def observe(self, k: int, accepted: int, draft_ms: float, verify_ms: float) -> None:
        if k < 1:
            return
        self.successes += accepted
        self.failures += int(accepted < k)
        self.draft_ms_per_token.append(draft_ms / k)
        self.verify.append((k, verify_ms))


@dataclass
class _Ahead:
    """Drafts made while a verification was in flight, for the prefix they assumed."""

    prefix: list[int]
    drafts: list[int]
    supports: list[np.ndarray]
    probs: list[np.ndarray]


def _timed_verify(verifier, committed: list[int], drafts: list[int], supports: list[np.ndarray],  # noqa: ANN001
                  probs: list[np.ndarray]) -> tuple[int, int, float]:
    t0 = time.perf_counter()
    accepted, token = verifier.verify(committed, drafts, supports, probs)
    return accepted, token, (time.perf_counter() - t0) * 1e3


def speculate(drafter: Drafter, verifier, prompt: list[int], max_new_tokens: int, k: int | KPolicy,  # noqa: ANN001
              eos: set[int] | None = None, overlap: bool = False) -> Rounds:
    """Generate up to ``max_new_tokens`` after ``prompt`` in rounds of ``k`` drafts (or as many as the
    policy chooses each round); stops at ``eos``.
    ``verifier.verify(committed, drafts, supports, probs) -> (accepted, token)``.

    ``overlap``: no idle round trip. While a round's verification is in flight (a worker thread
    waits for it), the device assumes every draft will be kept, guesses the target's extra token
    with the draft's own choice, and drafts the next block after that guess. When the answer
    confirms both (all drafts kept, the extra token equal to the guess), the next round starts
    with that block already drafted; otherwise the block is dropped and the draft's cache cropped,
    as after any rejection. Lossless and distribution-exact as without overlap: a kept block was
    drafted from exactly the prefix the target committed, and every draft still passes the same
    verification (``tests/test_speculative_rules.py``)."""
    if max_new_tokens < 1:
        raise InputError(f"max new tokens must be at least 1, got {max_new_tokens}")
    policy = FixedK(k) if isinstance(k, int) else k
    if isinstance(k, int) and not 1 <= k <= MAX_K:
        raise InputError(f"k (draft tokens per round) must be in 1..{MAX_K}, got {k}")
    committed = list(prompt)
    out = Rounds(tokens=[])
    ahead: _Ahead | None = None
    pool = None
    if overlap:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(1, thread_name_prefix="verify")
    start = time.perf_counter()
    try:
        while len(out.tokens) < max_new_tokens:
            room = max_new_tokens - len(out.tokens)
            step = min(policy.choose(), room - 1)  # no draft beyond what is still wanted (the target adds one more)
            before = len(committed)
            t0 = time.perf_counter()
            if ahead is not None and ahead.prefix == committed and len(ahead.drafts) >= step:
                drafts, supports, probs = ahead.drafts[:step], ahead.supports[:step], ahead.probs[:step]
                out.ahead_used += 1
            else:
                drafts, supports, probs = drafter.propose(committed, step)
            ahead = None
            t1 = time.perf_counter()
            if pool is not None and drafts and room - 1 > len(drafts) + 1:
                future = pool.submit(_timed_verify, verifier, list(committed), drafts, supports, probs)
                assumed = committed + drafts
                guess, _, _ = drafter.propose(assumed, 1)  # the target's extra token, as the draft sees it
                nxt, nxt_supports, nxt_probs = drafter.propose(assumed + guess, step)
                accepted, token, verify_ms = future.result()
                if accepted == len(drafts) and token == guess[0]:
                    ahead = _Ahead(assumed + guess, nxt, nxt_supports, nxt_probs)
            else:
                accepted, token, verify_ms = _timed_verify(verifier, committed, drafts, supports, probs)
            t2 = time.perf_counter()
            if ahead is None:
                drafter.keep(before, accepted)
            if out.accepted:  # not the first round: it carried the prompt (a prefill, not a decode round)
                policy.observe(step, accepted, (t1 - t0) * 1e3, verify_ms)
            out.accepted.append(accepted)
            out.proposed.append(step)
            out.draft_ms.append((t1 - t0) * 1e3)
            out.verify_ms.append((t2 - t1) * 1e3)
            for t in drafts[:accepted] + [token]:
                out.tokens.append(t)
                committed.append(t)
                if (eos and t in eos) or len(out.tokens) >= max_new_tokens:
                    out.seconds = time.perf_counter() - start
                    return out
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    out.seconds = time.perf_counter() - start
    return out


def decode_alone(lm: KVSession, prompt: list[int], max_new_tokens: int, sampling: Sampling = GREEDY, seed: int = 0,
                 eos: set[int] | None = None) -> list[int]:
    """One model decoding on its own, one token per pass (the baselines: target-only, draft-only)."""
    rng = np.random.default_rng(seed)
    lm.reset()
    logits = lm.feed(list(prompt))[-1]
    tokens: list[int] = []
    while True:
        if sampling.greedy:
            token = int(logits.argmax())
        else:
            token = int(rng.choice(len(logits), p=distribution(logits, sampling)))
        tokens.append(token)
        if len(tokens) >= max_new_tokens or (eos and token in eos):
            return tokens
        logits = lm.feed([token])[-1]
