"""The codec protocol every activation codec follows (after CompressAI's latent-codec split).

A codec is used in three places that must agree:

* ONNX export: ``device_module()`` runs on the device after the last device layer
  (float tensor -> wire tensor, e.g. uint8), ``server_module()`` runs first on the server
  (wire tensor -> float tensor). Both are baked into device.onnx / server.onnx.
* The link: ``pack(wire) -> bytes`` and ``unpack(bytes) -> wire`` (optionally zstd, or an
  entropy coder for learned codecs). ``len(pack(...))`` is what the cost model charges.
* The manifest: ``spec()`` returns the name and every parameter needed to rebuild the codec.

``calibrate`` sees sample activations (training data only) before export. Learned codecs
(issue #4) add a differentiable training path; the callers above do not change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["ActivationCodec", "CodecSpec", "EncodedTensor", "expected_bytes", "bounded_unzstd"]


@dataclass
class CodecSpec:
    """Serializable description of a codec: enough to rebuild it on the other side."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class EncodedTensor:
    data: bytes
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name of the wire tensor


def expected_bytes(enc: EncodedTensor) -> int:
    """Bytes of the tensor ``enc`` describes, computed in Python integers (no overflow)."""
    return math.prod(int(d) for d in enc.shape) * np.dtype(enc.dtype).itemsize


def bounded_unzstd(data: bytes, limit: int) -> bytes:
    """Decompress a zstd frame, reading at most ``limit`` bytes of output; more is a ``ValueError``."""
    import io

    import zstandard

    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as reader:
        out = reader.read(limit + 1)
    if len(out) > limit:
        raise ValueError(f"the zstd frame holds more than the {limit} bytes its tensor declares")
    return out


class ActivationCodec:
    """Base: identity in fp32. Subclasses override the pieces they change."""

    name = "fp32"
    wire_dtype = "float32"
    lossless = True

    def __init__(self, zstd_level: int | None = None) -> None:
        self.zstd_level = zstd_level

    # -- calibration -------------------------------------------------------------------------
    def calibrate(self, samples: list[torch.Tensor]) -> None:
        """Fit parameters on sample activations (the float tensor that crosses the cut)."""

    @property
    def calibrated(self) -> bool:
        return True

    # -- graph pieces (exported into ONNX) ---------------------------------------------------
    def device_module(self) -> nn.Module:
        return nn.Identity()

    def server_module(self) -> nn.Module:
        return nn.Identity()

    # -- bytes on the link -------------------------------------------------------------------
    def pack(self, wire: np.ndarray) -> EncodedTensor:
        raw = np.ascontiguousarray(wire).tobytes()
        if self.zstd_level is not None:
            import zstandard

            raw = zstandard.ZstdCompressor(level=self.zstd_level).compress(raw)
        return EncodedTensor(raw, tuple(wire.shape), str(wire.dtype))

    def unpack(self, enc: EncodedTensor) -> np.ndarray:
        """The wire tensor back from its bytes. A zstd frame is read as a stream and never past the
        bytes ``enc.shape`` holds: a small frame that claims gigabytes is refused, not allocated."""
        raw = enc.data
        if self.zstd_level is not None:
            raw = bounded_unzstd(raw, expected_bytes(enc))
        return np.frombuffer(raw, dtype=enc.dtype).reshape(enc.shape)

    # -- convenience: the whole round trip in torch, for fidelity checks ---------------------
    @torch.no_grad()
    def roundtrip(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(decoded tensor, bytes on the wire) for one activation."""
        wire = self.device_module()(x).numpy()
        enc = self.pack(wire)
        back = torch.from_numpy(self.unpack(enc).copy())
        return self.server_module()(back), len(enc.data)

    def spec(self) -> CodecSpec:
        params: dict[str, Any] = {"wire_dtype": self.wire_dtype}
        if self.zstd_level is not None:
            params["zstd_level"] = self.zstd_level
        return CodecSpec(self.full_name, params)

    @property
    def full_name(self) -> str:
        return self.name + ("+zstd" if self.zstd_level is not None else "")
