"""Greedy generation across the link with a split causal LM: the device runs the first layers
with its own KV cache and sends one hidden state per new token; the server keeps its session's
cache and answers the next token. One round trip per token.

If the server lost the session (evicted, restarted: a 409), the device starts it again with the
hidden states of the whole prefix (prompt and the tokens generated so far), recomputed from
its own layers: nothing is lost, the output is the same.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aiflow_cli.codecs.registry import codec_of
from aiflow_cli.errors import InputError, PeerError, SessionLostError
from aiflow_cli.export.opened import served_name
from aiflow_cli.models.speculative import empty_past
from aiflow_cli.ort import ort_session
from aiflow_cli.schemas.manifest import ExportedPair, Manifest
from aiflow_cli.serve.device.client import V2Client
from aiflow_cli.serve.wire import frame

__all__ = ["Generation", "LMDevice"]


@dataclass
class Generation:
    tokens: list[int]
    session: str
    round_trips: int = 0
    resent_prefixes: int = 0  # times the server had lost the session and the prefix was sent again
    bytes_sent: int = 0
    ms_per_token: list[float] = field(default_factory=list)


class LMDevice:
    """The device half of a causal-LM pair: ``device.onnx`` with its own KV cache."""

    def __init__(self, root: Path, manifest: Manifest, pair: ExportedPair, threads: int | None = None) -> None:
        if not pair.kv_cache:
            raise InputError(f"pair {pair.cut} is not a causal-LM pair")
        self.pair, self.model = pair, served_name(manifest, pair)
        self.session = ort_session(Path(root) / pair.device.file, threads)
        self.past_decls = pair.device.inputs[1:]
        self.codec = codec_of(pair)  # fp32, or a per-token bottleneck
        self.hidden_name = pair.crossing[0].name

    def _empty(self) -> dict[str, np.ndarray]:
        return empty_past(self.past_decls)

    def _hidden(self, ids: np.ndarray, past: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        outs = self.session.run(None, {"input_ids": ids.astype(np.int64), **past})
        return outs[0], {d.name: v for d, v in zip(self.past_decls, outs[1:])}

    def generate(self, client: V2Client, prompt_ids: list[int], max_new_tokens: int, eos: set[int] | None = None,
                 session: str | None = None) -> Generation:
        if max_new_tokens < 1:
            raise InputError(f"max new tokens must be at least 1, got {max_new_tokens}")
        gen = Generation(tokens=[], session=session or uuid.uuid4().hex[:16])
        past = self._empty()
        hidden, past = self._hidden(np.array([prompt_ids]), past)
        position, start = 0, True
        while len(gen.tokens) < max_new_tokens:
            t0 = time.perf_counter()
            data = np.frombuffer(frame(self.codec.pack(np.ascontiguousarray(hidden))), dtype=np.uint8)
            gen.round_trips += 1
            gen.bytes_sent += data.size
            try:
                result = client.call(self.model, {self.hidden_name: data}, ["next_token"], f"{gen.session}-{position}",
                                     sequence_id=gen.session, sequence_start=start, parameters={"position": position})
            except SessionLostError as exc:  # the server lost the session: resend the prefix
                gen.resent_prefixes += 1
                if gen.resent_prefixes > 3:
                    raise PeerError(f"the server keeps losing session {gen.session}: {exc.message}",
                                    status=exc.status) from None
                prefix = np.array([list(prompt_ids) + gen.tokens])
                hidden, past = self._hidden(prefix, self._empty())
                position, start = 0, True
                continue
            token = int(np.asarray(result.as_numpy("next_token")).reshape(-1)[0])
            position += hidden.shape[1]
            start = False
            gen.tokens.append(token)
            gen.ms_per_token.append((time.perf_counter() - t0) * 1e3)
            if eos and token in eos:
                break
            hidden, past = self._hidden(np.array([[token]]), past)
        return gen
