"""Non-learned codecs: fp16 and int8 affine quantisation (per tensor or per channel)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from aiflow_cli.codecs.base import ActivationCodec, CodecSpec
from aiflow_cli.errors import InputError

__all__ = ["Fp16Codec", "Int8Codec"]


class _Cast(nn.Module):
    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype)


class Fp16Codec(ActivationCodec):
    name = "fp16"
    wire_dtype = "float16"
    lossless = False

    def device_module(self) -> nn.Module:
        return _Cast(torch.float16)

    def server_module(self) -> nn.Module:
        return _Cast(torch.float32)


class _Quantize(nn.Module):
    """q = clamp(round(x / scale) + zero_point, 0, 255) as uint8; scale/zp broadcast over ``axis``."""

    def __init__(self, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zero_point)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.round(x / self.scale) + self.zero_point
        return q.clamp(0, 255).to(torch.uint8)


class _Dequantize(nn.Module):
    def __init__(self, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zero_point)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return (q.to(torch.float32) - self.zero_point) * self.scale


class Int8Codec(ActivationCodec):
    """Affine uint8 with ranges (min/max) calibrated on sample activations.

    ``per_channel``: one range per channel. The channel axis is 1 for 4-D conv activations
    (N, C, H, W) and the last axis for sequences (B, S, H).
    """

    wire_dtype = "uint8"
    lossless = False

    def __init__(self, per_channel: bool, zstd_level: int | None = None) -> None:
        super().__init__(zstd_level)
        self.per_channel = per_channel
        self.name = "int8-channel" if per_channel else "int8-tensor"
        self.scale: torch.Tensor | None = None
        self.zero_point: torch.Tensor | None = None
        self.axis: int | None = None
        self.ndim: int | None = None

    @property
    def calibrated(self) -> bool:
        return self.scale is not None

    def _axis(self, ndim: int) -> int:
        return 1 if ndim == 4 else ndim - 1

    @torch.no_grad()
    def calibrate(self, samples: list[torch.Tensor]) -> None:
        if not samples:
            raise InputError("int8 codec calibration needs at least one sample activation")
        ndim = samples[0].dim()
        if self.per_channel:
            axis = self._axis(ndim)
            flat = [s.transpose(0, axis).reshape(s.shape[axis], -1) for s in samples]
            lo = torch.stack([f.min(1).values for f in flat]).min(0).values
            hi = torch.stack([f.max(1).values for f in flat]).max(0).values
        else:
            axis = None
            lo = torch.stack([s.min() for s in samples]).min().reshape(1)
            hi = torch.stack([s.max() for s in samples]).max().reshape(1)
        lo, hi = torch.minimum(lo, torch.zeros_like(lo)), torch.maximum(hi, torch.zeros_like(hi))
        scale = ((hi - lo) / 255.0).clamp(min=1e-8)
        zero_point = torch.round(-lo / scale)
        self.set_params(scale, zero_point, axis, ndim)

    def set_params(self, scale: torch.Tensor, zero_point: torch.Tensor, axis: int | None, ndim: int) -> None:
        shape = [1] * ndim
        if axis is not None:
            shape[axis] = -1
        self.scale = scale.float().reshape(shape)
        self.zero_point = zero_point.float().reshape(shape)
        self.axis, self.ndim = axis, ndim

    def _require(self) -> None:
        if self.scale is None:
            raise InputError(f"{self.name} codec is not calibrated", "calibrate it on sample inputs first")

    def device_module(self) -> nn.Module:
        self._require()
        return _Quantize(self.scale, self.zero_point)

    def server_module(self) -> nn.Module:
        self._require()
        return _Dequantize(self.scale, self.zero_point)

    def spec(self) -> CodecSpec:
        self._require()
        spec = super().spec()
        spec.params.update({
            "axis": self.axis, "ndim": self.ndim,
            "scale": [round(float(v), 10) for v in self.scale.reshape(-1)],
            "zero_point": [int(v) for v in self.zero_point.reshape(-1)],
        })
        return spec

    @classmethod
    def from_params(cls, per_channel: bool, params: dict[str, Any]) -> "Int8Codec":
        codec = cls(per_channel, params.get("zstd_level"))
        scale = torch.tensor(params["scale"], dtype=torch.float32)
        if scale.numel() == 0 or not bool(torch.isfinite(scale).all()) or not bool((scale > 0).all()):
            raise ValueError("every scale must be a finite number above 0")
        codec.set_params(scale, torch.tensor(params["zero_point"], dtype=torch.float32), params["axis"], params["ndim"])
        return codec
