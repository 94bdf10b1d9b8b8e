"""The device side of speculative decoding across the link: the draft here, the target on the
server (:mod:`aiflow_cli.serve.server.verifier`), one round trip per round.

Each round the device sends the committed tokens the server has not seen (at least the last
one) and its ``k`` drafts; when sampling, also the sparse distribution each draft was drawn
from (token ids as int32, probabilities as float16: 6 bytes per support entry). The server
answers how many drafts it kept and the next token; both sides forget the rest.

If the server lost the session (evicted, restarted: a 409), the device starts it again with
the whole prefix (prompt and the tokens generated so far): nothing is lost, the output is the same.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aiflow_cli.errors import InputError, PeerError, SessionLostError
from aiflow_cli.export.opened import open_export
from aiflow_cli.export.speculative import TOKENIZER_DIR
from aiflow_cli.hashing import vocabulary_sha256
from aiflow_cli.models.speculative import (
    GREEDY,
    Drafter,
    KPolicy,
    KVSession,
    Rounds,
    Sampling,
    speculate,
)
from aiflow_cli.schemas.manifest import Manifest
from aiflow_cli.serve.device.client import V2Client

__all__ = ["RemoteVerifier", "SpeculativeDevice", "RemoteStats", "server_only"]

MAX_RESENDS = 3


@dataclass
class RemoteStats:
    round_trips: int = 0
    resent_prefixes: int = 0  # times the server had lost the session and the prefix was sent again
    request_bytes: list[int] = field(default_factory=list)  # per round: the HTTP body sent
    sampling_bytes: int = 0  # support ids + probabilities, all rounds
    drafts_sent: int = 0
    server_ms: list[float] = field(default_factory=list)  # per round, as the server reports it
    pass_ms: list[float] = field(default_factory=list)  # per round: the target's pass alone, as the server reports it
    trip_ms: list[float] = field(default_factory=list)  # per round: the client call (encode, link, server, decode)

    @property
    def sampling_bytes_per_draft(self) -> float:
        return self.sampling_bytes / max(1, self.drafts_sent)


class RemoteVerifier:
    """``verify()`` for :func:`speculate` over a v2 server; tracks how much of the prefix the server holds."""

    def __init__(self, client: V2Client, model: str, sampling: Sampling = GREEDY, seed: int = 0,
                 session: str | None = None) -> None:
        self.client, self.model, self.sampling, self.seed = client, model, sampling, seed
        self.session = session or uuid.uuid4().hex[:16]
        self.position, self.start = 0, True
        self.stats = RemoteStats()

    def params(self, **extra: Any) -> dict[str, Any]:
        """The round's parameters: the position the server must hold, and how to sample."""
        params: dict[str, Any] = {"position": self.position, **extra}
        if not self.sampling.greedy:
            params.update(temperature=self.sampling.temperature, top_p=self.sampling.top_p,
                          top_k=self.sampling.top_k, seed=self.seed)
        return params

    def send(self, tensors: dict[str, np.ndarray], outputs: list[str], params: dict[str, Any],  # noqa: ANN201
             end: bool = False):
        """The server's result, or None when it lost the session (the prefix is then resent from 0)."""
        self.stats.round_trips += 1
        self.stats.request_bytes.append(sum(a.nbytes for a in tensors.values()))
        t0 = time.perf_counter()
        try:
            result = self.client.call(self.model, tensors, outputs, f"{self.session}-{self.position}",
                                      sequence_id=self.session, sequence_start=self.start, sequence_end=end,
                                      parameters=params)
        except SessionLostError as exc:
            self.stats.resent_prefixes += 1
            if self.stats.resent_prefixes > MAX_RESENDS:
                raise PeerError(f"the server keeps losing session {self.session}: {exc.message}",
                                status=exc.status) from None
            self.position, self.start = 0, True
            return None
        self.stats.trip_ms.append((time.perf_counter() - t0) * 1e3)
        answered = result.get_response().get("parameters") or {}
        self.stats.server_ms.append(float(answered.get("aiflow_server_ms", 0)))
        self.stats.pass_ms.append(float(answered.get("aiflow_pass_ms", 0)))
        return result

    def verify(self, committed: list[int], drafts: list[int], supports: list[np.ndarray],
               probs: list[np.ndarray]) -> tuple[int, int]:
        while True:
            tensors = {"input_ids": np.asarray([committed[self.position:] + drafts], dtype=np.int64)}
            if not self.sampling.greedy and drafts:
                tensors.update(draft_support=np.concatenate(supports).astype(np.int32),
                               draft_probs=np.concatenate(probs).astype(np.float16),
                               draft_sizes=np.array([len(s) for s in supports], dtype=np.int32))
            result = self.send(tensors, ["accepted", "next_token"], self.params(draft_count=len(drafts)))
            if result is None:
                continue
            accepted = int(result.as_numpy("accepted").reshape(-1)[0])
            token = int(result.as_numpy("next_token").reshape(-1)[0])
            if not 0 <= accepted <= len(drafts):
                raise PeerError(f"the server accepted {accepted} of {len(drafts)} drafts")
            self.stats.drafts_sent += len(drafts)
            self.stats.sampling_bytes += sum(a.nbytes for n, a in tensors.items() if n != "input_ids")
            self.position, self.start = len(committed) + accepted, False
            return accepted, token


def server_only(client: V2Client, model: str, prompt: list[int], max_new_tokens: int, sampling: Sampling = GREEDY,
                seed: int = 0) -> tuple[list[int], float]:
    """The server-only baseline: the device sends the prompt, the target generates alone on the server.
    (tokens, seconds)."""
    verifier = RemoteVerifier(client, model, sampling, seed)
    t0 = time.perf_counter()
    while True:
        result = verifier.send({"input_ids": np.asarray([prompt], dtype=np.int64)}, ["tokens"],
                               verifier.params(max_new_tokens=max_new_tokens), end=True)
        if result is not None:
            return result.as_numpy("tokens").reshape(-1).tolist(), time.perf_counter() - t0


class SpeculativeDevice:
    """The draft of a speculative export, checked against its manifest, with the shared tokenizer."""

    def __init__(self, directory: Path, threads: int | None = None) -> None:
        self.directory = Path(directory)
        opened = open_export(self.directory)  # the manifest, read and checked once
        if opened.manifest.speculative is None:
            raise InputError(f"{self.directory}: not a speculative-decoding export",
                             "export one with aiflow split speculative --draft D --target T --export DIR")
        self.manifest: Manifest = opened.manifest
        self.info = opened.manifest.speculative
        self.pair, self.model = opened.pairs[0].pair, opened.pairs[0].name
        self.threads = threads

    def tokenizer(self):  # noqa: ANN201 - a transformers tokenizer
        """The export's tokenizer, refused when its hash is not the manifest's."""
        from transformers import AutoTokenizer

        path = self.directory / TOKENIZER_DIR
        if not path.is_dir():
            raise InputError(f"{path}: missing", "re-export: the tokenizer travels with the pair")
        tok = AutoTokenizer.from_pretrained(str(path))
        if vocabulary_sha256(tok.get_vocab()) != self.info.tokenizer_sha256:
            raise InputError(f"{path}: its vocabulary does not match the manifest's tokenizer_sha256",
                             "re-export the pair; the tokenizer and the models must come together")
        return tok

    def draft_session(self) -> KVSession:
        return KVSession.open(self.directory / self.pair.device.file, self.pair.device.inputs, self.threads)

    def generate(self, client: V2Client, prompt: list[int], max_new_tokens: int, k: int | KPolicy,
                 sampling: Sampling = GREEDY, seed: int = 0, draft: KVSession | None = None,
                 overlap: bool = False) -> tuple[Rounds, RemoteStats]:
        """Speculative generation across the link; ``overlap``: draft the next block while each
        verification is in flight (see :func:`~aiflow_cli.models.speculative.speculate`)."""
        if len(prompt) + max_new_tokens + (k if isinstance(k, int) else 0) > self.info.max_positions:
            raise InputError(f"a {len(prompt)}-token prompt and {max_new_tokens} new tokens do not fit the target's "
                             f"context of {self.info.max_positions:,}", "shorten the prompt or ask for fewer tokens")
        draft = draft or self.draft_session()
        draft.reset()
        verifier = RemoteVerifier(client, self.model, sampling, seed)
        rounds = speculate(Drafter(draft, sampling, seed), verifier, prompt, max_new_tokens, k,
                           set(self.info.eos_ids), overlap=overlap)
        return rounds, verifier.stats
