"""The device side of a pair: ``device.onnx`` here, the codec's bytes over KServe v2 (with the field's
own client, ``tritonclient.http``), the server half there.

Per request it measures what each part cost: device compute, encode (codec on the device),
the round trip (link + server), the server's own compute (which the server reports), and so
the transfer (round trip minus server time). A request carries an id; on a connection error or a
5xx it is retried with backoff under the same id, and it ends as ``ok``, ``retried`` (ok after
retries) or ``failed`` (with the reason): a run's summary accounts for every request once.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from aiflow_cli.codecs.registry import crossing_codecs
from aiflow_cli.errors import InputError
from aiflow_cli.export.opened import open_export, served_name
from aiflow_cli.ort import ort_session
from aiflow_cli.schemas.manifest import ExportedPair, Manifest
from aiflow_cli.serve.device.client import V2Client
from aiflow_cli.serve.wire import frame

__all__ = ["RequestRecord", "DevicePair", "load_device_pairs", "arrays_of", "bench_inputs"]



@dataclass
class RequestRecord:
    index: int
    request_id: str
    cut: str
    status: str = "ok"  # ok | retried | failed | exited
    attempts: int = 1
    error: str | None = None
    device_ms: float = 0.0
    encode_ms: float = 0.0
    codec_bytes: int = 0  # what the codec produced
    request_bytes: int = 0  # the HTTP body sent: codec bytes + frames + the v2 JSON header
    response_bytes: int = 0  # the answer's body: outputs + its v2 JSON header
    roundtrip_ms: float = 0.0  # send, server, answer
    server_ms: float = 0.0  # reported by the server (decode + server.onnx)
    transfer_ms: float = 0.0  # roundtrip - server
    total_ms: float = 0.0
    prediction: int | None = None
    label: int | None = None
    exit: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class DevicePair:
    """One exported pair's device half: ``device.onnx``, the codec, and the model name on the server."""

    def __init__(self, root: Path, manifest: Manifest, pair: ExportedPair, threads: int | None = None,
                 slowdown: float = 1.0) -> None:
        """``slowdown`` > 1 emulates a device that many times slower than this machine: after
        ``device.onnx`` runs, the device waits (slowdown - 1) x its own time (reported as device time)."""
        if not 1.0 <= slowdown <= 1000:
            raise InputError(f"--device-slowdown must be between 1 and 1000, got {slowdown:g}")
        self.slowdown = slowdown
        if pair.kv_cache:
            raise InputError(f"pair {pair.cut} is a causal-LM pair", "use the generation client for LM pairs")
        self.pair, self.model = pair, served_name(manifest, pair)
        self.session = ort_session(Path(root) / pair.device.file, threads)
        self.staged = None
        if pair.exits:  # exits answer on the device, and an input that exits stops computing there
            from aiflow_cli.serve.device.stages import StagedDevice

            self.staged = StagedDevice(Path(root), pair, threads)
        self.codecs = crossing_codecs(pair)
        self.output = pair.server.outputs[0].name

    def encode(self, x: Any) -> tuple[dict[str, np.ndarray], int, float, float]:
        """(framed tensors to send, codec bytes, device ms, encode ms)."""
        framed, codec_bytes, device_ms, encode_ms, _ = self._device(x, exits=False)
        return framed, codec_bytes, device_ms, encode_ms

    def _device(self, x: Any, exits: bool = True) -> tuple[dict[str, np.ndarray], int, float, float, Any]:
        feeds = {d.name: a for d, a in zip(self.pair.device.inputs, arrays_of(x))}
        t0 = time.perf_counter()
        exited = None
        if exits and self.staged is not None:
            wire, decl, logits = self.staged.run(feeds)
            if decl is not None:
                exited = (decl, logits)
        else:
            wire = self.session.run([d.name for d in self.pair.crossing], feeds)
        if self.slowdown > 1:
            time.sleep((self.slowdown - 1) * (time.perf_counter() - t0))
        t1 = time.perf_counter()
        if exited is not None:
            return {}, 0, (t1 - t0) * 1e3, 0.0, exited
        encoded = [c.pack(w) for c, w in zip(self.codecs, wire)]
        framed = {d.name: np.frombuffer(frame(e), dtype=np.uint8) for d, e in zip(self.pair.crossing, encoded)}
        t2 = time.perf_counter()
        return framed, sum(len(e.data) for e in encoded), (t1 - t0) * 1e3, (t2 - t1) * 1e3, None

    def request(self, client: V2Client, x: Any, index: int, label: int | None = None,
                server_clock: Callable[[], float] | None = None) -> RequestRecord:
        """One request. ``server_clock`` (Triton): cumulative server compute ms, read before and after
        (outside the timed part) when the server reports no per-request time itself."""
        before = server_clock() if server_clock else 0.0
        t0 = time.perf_counter()
        framed, codec_bytes, device_ms, encode_ms, exited = self._device(x)
        on_device = time.perf_counter() - t0
        record = RequestRecord(index=index, request_id=uuid.uuid4().hex[:16], cut=self.pair.cut, device_ms=device_ms,
                               encode_ms=encode_ms, codec_bytes=codec_bytes, label=label)
        if exited is not None:  # answered on the device: nothing crossed the link
            decl, logits = exited
            record.status, record.exit, record.total_ms = "exited", decl.cut, on_device * 1e3
            record.prediction = int(np.asarray(logits).reshape(-1).argmax())
            return record
        record.request_bytes = client.request_bytes(framed, [self.output], record.request_id)  # bookkeeping, untimed
        t1 = time.perf_counter()
        result, attempts, error = client.infer(self.model, framed, [self.output], record.request_id)
        t2 = time.perf_counter()
        record.attempts, record.roundtrip_ms = attempts, (t2 - t1) * 1e3
        record.total_ms = (on_device + t2 - t1) * 1e3
        if result is None:
            record.status, record.error = "failed", error
            return record
        record.status = "ok" if attempts == 1 else "retried"
        params = result.get_response().get("parameters", {})
        record.server_ms = server_clock() - before if server_clock else float(params.get("aiflow_server_ms", 0.0))
        record.transfer_ms = record.roundtrip_ms - record.server_ms
        output = np.asarray(result.as_numpy(self.output))
        record.response_bytes = output.nbytes + len(json.dumps(result.get_response(), separators=(",", ":")))
        record.prediction = int(output.reshape(-1).argmax())
        return record


def arrays_of(x: Any) -> list[np.ndarray]:
    """An input as numpy arrays: torch tensors (the zoo's examples), arrays, or tuples of them."""
    if hasattr(x, "detach"):
        return [x.detach().cpu().numpy()]
    if isinstance(x, (tuple, list)):
        return [a for v in x for a in arrays_of(v)]
    return [np.asarray(x)]


def load_device_pairs(directory: Path, threads: int | None = None, slowdown: float = 1.0
                      ) -> tuple[Manifest, dict[str, DevicePair]]:
    """The export's device halves by cut, after its hashes and declarations were checked."""
    opened = open_export(directory)
    directory, manifest = opened.directory, opened.manifest
    return manifest, {p.cut: DevicePair(directory, manifest, p, threads, slowdown) for p in manifest.pairs
                      if not p.kv_cache}


def bench_inputs(count: int, data: Path | None = None) -> tuple[list[Any], list[int | None], str]:
    """Real test-split photos (with labels) when there are any, else the zoo's example input."""
    from aiflow_cli.data.imagenet import default_image_roots, load_batch, read_labels

    roots = [data] if data is not None else default_image_roots()
    if roots:
        records = read_labels(roots, "test")[:count]
        images, labels = load_batch(records)
        return [images[i:i + 1].numpy() for i in range(len(records))], labels.tolist(), \
            f"{len(records)} test-split photos from {', '.join(map(str, roots))}"
    raise InputError("no input photos for the bench", "pass --data FOLDER or set AIFLOW_DATA")
