"""Codec names as users type them (``int8-channel+zstd``) -> codec objects; manifest -> codec."""

from __future__ import annotations

from aiflow_cli.codecs.base import ActivationCodec, CodecSpec
from aiflow_cli.codecs.simple import Fp16Codec, Int8Codec
from aiflow_cli.errors import InputError

__all__ = ["CODEC_NAMES", "make_codec", "codec_from_spec"]

CODEC_NAMES = ["fp32", "fp16", "int8-tensor", "int8-channel"]
ZSTD_LEVEL = 9


def make_codec(name: str) -> ActivationCodec:
    base, plus, extra = name.partition("+")
    if plus and extra != "zstd":
        raise InputError(f"unknown codec '{name}'", "append only '+zstd' to a codec name")
    zstd = ZSTD_LEVEL if plus else None
    if base == "fp32":
        return ActivationCodec(zstd)
    if base == "fp16":
        return Fp16Codec(zstd)
    if base in ("int8-tensor", "int8-channel"):
        return Int8Codec(per_channel=base == "int8-channel", zstd_level=zstd)
    raise InputError(f"unknown codec '{name}'",
                     "choose from " + ", ".join(CODEC_NAMES) + " (each optionally +zstd)")


def codec_from_spec(spec: CodecSpec) -> ActivationCodec:
    """Rebuild a codec from the manifest, parameters included."""
    base = spec.name.partition("+")[0]
    if base == "learned-bottleneck":
        from aiflow_cli.codecs.learned import LearnedBottleneckCodec

        return LearnedBottleneckCodec.from_params(spec.params)
    if base in ("int8-tensor", "int8-channel"):
        return Int8Codec.from_params(base == "int8-channel", spec.params)
    return make_codec(spec.name)
