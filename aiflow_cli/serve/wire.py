"""What crosses the link for one tensor: the codec's bytes behind a small frame that says how to
unpack them.

::

    frame = magic "AF" | version u8 | dtype u8 | ndim u8 | dims u32 x ndim | codec bytes

The codec decides the bytes (raw, zstd, range-coded); the frame only carries the wire tensor's
shape and dtype so the server can rebuild it. On the KServe v2 protocol a frame travels as one
``UINT8`` tensor of shape ``[len(frame)]`` with the binary tensor data extension, so the bytes on
the link are the codec's bytes + this header + the protocol's JSON header (reported apart).
"""

from __future__ import annotations

import struct

import numpy as np

from aiflow_cli.codecs.base import EncodedTensor
from aiflow_cli.errors import InputError

__all__ = ["MAGIC", "frame", "unframe", "frame_header_bytes"]

MAGIC = b"AF"
VERSION = 1
_DTYPES = ["float32", "float16", "uint8", "int8", "int32", "int64", "bool"]
MAX_DIMS = 8


def frame_header_bytes(ndim: int) -> int:
    return 5 + 4 * ndim


def frame(enc: EncodedTensor) -> bytes:
    if enc.dtype not in _DTYPES:
        raise ValueError(f"dtype {enc.dtype} cannot cross the link")
    head = MAGIC + struct.pack("<BBB", VERSION, _DTYPES.index(enc.dtype), len(enc.shape))
    return head + struct.pack(f"<{len(enc.shape)}I", *enc.shape) + enc.data


def unframe(data: bytes | memoryview | np.ndarray, what: str = "tensor") -> EncodedTensor:
    """Parse a frame; anything malformed is an :class:`InputError` naming ``what`` (a server
    answers it with a 400)."""
    raw = bytes(data) if not isinstance(data, bytes) else data
    if len(raw) < 5 or raw[:2] != MAGIC:
        raise InputError(f"{what}: not an aiflow wire frame ({len(raw)} bytes)", "send the codec's framed bytes")
    version, dtype, ndim = struct.unpack("<BBB", raw[2:5])
    if version != VERSION or dtype >= len(_DTYPES) or ndim > MAX_DIMS or len(raw) < frame_header_bytes(ndim):
        raise InputError(f"{what}: unsupported or truncated wire frame header", "send the codec's framed bytes")
    shape = struct.unpack(f"<{ndim}I", raw[5:5 + 4 * ndim])
    return EncodedTensor(raw[frame_header_bytes(ndim):], tuple(shape), _DTYPES[dtype])
