"""The server halves of an export as models a v2 server can serve: one model per exported pair.

A model takes the framed codec bytes of each crossing tensor (``UINT8``), decodes them with the
manifest's codec, runs ``server.onnx`` in onnxruntime and returns its outputs. Causal-LM pairs
keep one KV cache per session (``sequence_id``): a bounded number of sessions, evicted when idle
or closed, and each request says at which position it continues, so a retried request is
idempotent and a lost session is reported (the device resends its prefix).

Everything that comes off the network is checked before it reaches onnxruntime: unknown tensors,
a wrong dtype or shape, bytes that do not decode. Each is an :class:`InputError` (a 400).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aiflow_cli.codecs.base import ActivationCodec
from aiflow_cli.codecs.registry import codec_of, crossing_codecs
from aiflow_cli.errors import InputError
from aiflow_cli.models.speculative import crop_past, empty_past
from aiflow_cli.ort import ort_session
from aiflow_cli.schemas.manifest import (
    ExportedPair,
    TensorDecl,
)
from aiflow_cli.serve.protocol import MAX_BATCH, V2_OF
from aiflow_cli.serve.wire import unframe

__all__ = ["ServedModel", "PairModel", "LMPairModel", "SessionLost", "SessionCache", "crop",
           "session_parameters", "check_inputs", "decode_wire", "check_frame_shape", "MAX_BATCH"]

MAX_DYNAMIC_DIM = 65_536  # any other dynamic dimension (tokens of a sequence, ...)
MAX_DECODED_BYTES = 128 * 2**20  # one decoded wire tensor



class SessionLost(InputError):
    """The server no longer holds this session's cache (evicted, closed or restarted)."""


@dataclass
class ServedModel:
    """What the v2 endpoints need to know about a model, and the call that runs it."""

    name: str
    pair: ExportedPair
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "versions": ["1"], "platform": "aiflow_onnxruntime",
                "inputs": self.inputs, "outputs": self.outputs,
                "parameters": {"cut": self.pair.cut, "codec": self.pair.codec.name}}

    def infer(self, tensors: dict[str, np.ndarray], parameters: dict[str, Any]) -> tuple[dict[str, np.ndarray],
                                                                                          dict[str, Any]]:
        raise NotImplementedError


def _v2_shape(decl: TensorDecl) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in decl.shape]


def check_frame_shape(shape: tuple[int, ...], decl: TensorDecl, max_batch: int = MAX_BATCH) -> None:
    """Refuse a framed shape before anything is decoded or allocated: fixed dimensions must be the
    declared ones, the first dynamic one (the batch) at most ``max_batch``, any other dynamic one at
    most ``MAX_DYNAMIC_DIM``, and the whole at most ``MAX_DECODED_BYTES`` (Python integers: a product
    cannot overflow)."""
    where = f"input '{decl.name}'"
    if len(shape) != len(decl.shape):
        raise InputError(f"{where}: wire shape {list(shape)} does not fit the declared {decl.shape}")
    for i, (d, s) in enumerate(zip(decl.shape, shape)):
        if isinstance(d, int) and d != s:
            raise InputError(f"{where}: wire shape {list(shape)} does not fit the declared {decl.shape}")
        if not isinstance(d, int) and i == 0 and s > max_batch:
            raise InputError(f"{where}: batch {s} is over this server's limit of {max_batch}",
                             "send smaller batches, or start the server with a larger --max-batch")
        if not isinstance(d, int) and s > MAX_DYNAMIC_DIM:
            raise InputError(f"{where}: dimension '{d}' of {s} is over the limit of {MAX_DYNAMIC_DIM}")
    size = math.prod(shape) * np.dtype(decl.dtype).itemsize
    if size > MAX_DECODED_BYTES:
        raise InputError(f"{where}: {list(shape)} {decl.dtype} is {size:,} bytes, over the limit of "
                         f"{MAX_DECODED_BYTES:,}", "send smaller batches")


def decode_wire(codec: ActivationCodec, data: np.ndarray, decl: TensorDecl, max_batch: int = MAX_BATCH) -> np.ndarray:
    """Framed bytes -> the wire tensor ``server.onnx`` expects, checked against its declaration and
    the server's bounds before the codec decodes (or decompresses) anything."""
    if data.dtype != np.uint8 or data.ndim != 1:
        raise InputError(f"input '{decl.name}': expected UINT8 [bytes], got {data.dtype} {list(data.shape)}",
                         "send the framed codec bytes as one UINT8 tensor")
    enc = unframe(data.tobytes(), f"input '{decl.name}'")
    if enc.dtype != decl.dtype:
        raise InputError(f"input '{decl.name}': wire dtype {enc.dtype}, the manifest declares {decl.dtype}")
    check_frame_shape(tuple(enc.shape), decl, max_batch)
    try:
        array = codec.unpack(enc)
    except Exception as exc:  # noqa: BLE001 - zstd, range coder and reshape all fail differently on bad bytes
        raise InputError(f"input '{decl.name}': the bytes do not decode with codec {codec.full_name} "
                         f"({exc.__class__.__name__})", "send bytes packed by the same codec") from None
    if tuple(array.shape) != tuple(enc.shape) or array.dtype != np.dtype(decl.dtype):
        raise InputError(f"input '{decl.name}': decoded {array.dtype} {list(array.shape)}, framed as "
                         f"{enc.dtype} {list(enc.shape)}")
    return array


def check_inputs(tensors: dict[str, np.ndarray], names: list[str]) -> None:
    unknown = sorted(set(tensors) - set(names))
    missing = [n for n in names if n not in tensors]
    if unknown:
        raise InputError(f"unknown input '{unknown[0][:60]}'", "inputs: " + ", ".join(names))
    if missing:
        raise InputError(f"missing input '{missing[0]}'", "inputs: " + ", ".join(names))


class PairModel(ServedModel):
    """An image / encoder pair: stateless, one request = one ``server.onnx`` run."""

    def __init__(self, root: Path, name: str, pair: ExportedPair, threads: int | None = None,
                 max_batch: int = MAX_BATCH) -> None:
        self.max_batch = max_batch
        wire = [{"name": d.name, "datatype": "UINT8", "shape": [-1]} for d in pair.crossing]
        outs = [{"name": d.name, "datatype": V2_OF[d.dtype], "shape": _v2_shape(d)} for d in pair.server.outputs]
        super().__init__(name, pair, wire, outs)
        self.session = ort_session(Path(root) / pair.server.file, threads)
        self.codecs = crossing_codecs(pair)

    def infer(self, tensors: dict[str, np.ndarray], parameters: dict[str, Any]) -> tuple[dict[str, np.ndarray],
                                                                                          dict[str, Any]]:
        check_inputs(tensors, [d.name for d in self.pair.crossing])
        t0 = time.perf_counter()
        feeds = {d.name: decode_wire(c, tensors[d.name], d, self.max_batch)
                 for d, c in zip(self.pair.crossing, self.codecs)}
        t1 = time.perf_counter()
        outs = self.session.run(None, feeds)
        t2 = time.perf_counter()
        return ({d.name: np.asarray(o) for d, o in zip(self.pair.server.outputs, outs)},
                {"aiflow_decode_ms": round((t1 - t0) * 1e3, 4), "aiflow_server_ms": round((t2 - t0) * 1e3, 4)})


@dataclass
class _Session:
    past: dict[str, np.ndarray]
    position: int = 0
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)  # one step at a time per session


class SessionCache:
    """KV caches by session id: a bounded number, the least recently used evicted first, and any
    idle longer than ``idle_seconds`` dropped. ``past_decls`` declare the cache tensors."""

    def __init__(self, past_decls: list[TensorDecl], max_sessions: int = 64, idle_seconds: float = 300.0) -> None:
        self.past_decls = past_decls
        self.max_sessions, self.idle_seconds = max_sessions, idle_seconds
        self.sessions: dict[str, _Session] = {}
        self.lock = threading.Lock()

    def empty(self) -> dict[str, np.ndarray]:
        return empty_past(self.past_decls)

    def get(self, sid: str, start: bool) -> _Session:
        now = time.monotonic()
        with self.lock:
            for key in [k for k, s in self.sessions.items() if now - s.last_used > self.idle_seconds]:
                del self.sessions[key]
            if start:
                if sid not in self.sessions and len(self.sessions) >= self.max_sessions:
                    oldest = min(self.sessions, key=lambda k: self.sessions[k].last_used)
                    del self.sessions[oldest]
                self.sessions[sid] = _Session(self.empty())
            if sid not in self.sessions:
                raise SessionLost(f"session '{sid[:40]}' is not held by this server (evicted, closed or restarted)",
                                  "start it again with sequence_start and the whole prefix")
            session = self.sessions[sid]
            session.last_used = now
            return session

    def close(self, sid: str) -> None:
        with self.lock:
            self.sessions.pop(sid, None)

    @staticmethod
    def continue_at(session: _Session, sid: str, position: int | None) -> None:
        """Bring the cache to ``position`` tokens: a retry of a step already applied is cropped back;
        a cache shorter than ``position`` means the session was lost."""
        if position is None:
            return
        if session.position < position:
            raise SessionLost(f"session '{sid[:40]}' holds {session.position} positions, the request "
                              f"continues at {position}", "start it again with sequence_start and the whole prefix")
        crop(session, position)


def crop(session: _Session, length: int) -> None:
    """Forget everything in the cache after its first ``length`` positions."""
    if session.position > length:
        session.past = crop_past(session.past, length)
        session.position = length


def session_parameters(parameters: dict[str, Any]) -> tuple[str, bool, int | None]:
    """(sequence id, start?, position) from a request's parameters, checked."""
    sid = parameters.get("sequence_id")
    if not isinstance(sid, (str, int)) or isinstance(sid, bool) or str(sid) == "":
        raise InputError("this model keeps a cache per session and needs the request parameter 'sequence_id'",
                         "one id per generation")
    position = parameters.get("position", None)
    if position is not None and (not isinstance(position, int) or isinstance(position, bool) or position < 0):
        raise InputError("parameter 'position' must be a whole number >= 0")
    return str(sid), bool(parameters.get("sequence_start", False)), position


class LMPairModel(ServedModel):
    """A causal-LM pair's server half with one KV cache per session; answers the greedy next token.

    Request parameters: ``sequence_id`` (the session), ``sequence_start`` (a new session),
    ``sequence_end`` (close it after this step), ``position`` (tokens the server's cache must hold
    before this step: a retry of a step already applied is cropped back to it; a cache shorter
    than it means the session was lost).
    """

    def __init__(self, root: Path, name: str, pair: ExportedPair, threads: int | None = None,
                 max_sessions: int = 64, idle_seconds: float = 300.0) -> None:
        hidden = pair.crossing[0]
        super().__init__(name, pair, [{"name": hidden.name, "datatype": "UINT8", "shape": [-1]}],
                         [{"name": "next_token", "datatype": "INT64", "shape": [1, 1]}])
        self.session = ort_session(Path(root) / pair.server.file, threads)
        self.codec = codec_of(pair)  # fp32, or a per-token bottleneck
        self.past_decls = pair.server.inputs[1:]
        self.cache = SessionCache(self.past_decls, max_sessions, idle_seconds)

    def infer(self, tensors: dict[str, np.ndarray], parameters: dict[str, Any]) -> tuple[dict[str, np.ndarray],
                                                                                          dict[str, Any]]:
        hidden_decl = self.pair.crossing[0]
        check_inputs(tensors, [hidden_decl.name])
        sid, start, position = session_parameters(parameters)
        t0 = time.perf_counter()
        hidden = decode_wire(self.codec, tensors[hidden_decl.name], hidden_decl, max_batch=1)  # one sequence a session
        if hidden.shape[1] < 1:
            raise InputError(f"input '{hidden_decl.name}': no tokens", "send the hidden state of at least one token")
        session = self.cache.get(sid, start)
        with session.lock:  # retries of one step arrive together: each crops back, then applies it once
            self.cache.continue_at(session, sid, position)
            t1 = time.perf_counter()
            outs = self.session.run(None, {hidden_decl.name: hidden, **session.past})
            session.past = {d.name: v for d, v in zip(self.past_decls, outs[1:])}
            session.position += hidden.shape[1]
            position_after = session.position  # read under the lock: a retry may crop it back at once
        token = np.asarray(outs[0][:, -1].argmax(-1), dtype=np.int64).reshape(1, 1)
        if parameters.get("sequence_end", False):
            self.cache.close(sid)
        t2 = time.perf_counter()
        return {"next_token": token}, {"aiflow_decode_ms": round((t1 - t0) * 1e3, 4),
                                       "aiflow_server_ms": round((t2 - t0) * 1e3, 4), "position": position_after}
