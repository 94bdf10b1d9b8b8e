"""Codec names as users type them (``int8-channel+zstd``) -> codec objects; manifest -> codec."""

from __future__ import annotations

from aiflow_cli.codecs.base import ActivationCodec, CodecSpec
from aiflow_cli.codecs.simple import Fp16Codec, Int8Codec
from aiflow_cli.errors import ConfigError, InputError
from aiflow_cli.schemas.manifest import ExportedPair

__all__ = ["CODEC_NAMES", "make_codec", "codec_from_spec", "codec_of", "crossing_codecs"]

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


def codec_of(pair: ExportedPair) -> ActivationCodec:
    """The codec a manifest declares for a pair's first crossing tensor (a learned codec's tables
    included); parameters that do not make a codec are a ``ConfigError`` naming the pair."""
    try:
        return codec_from_spec(CodecSpec(pair.codec.name, pair.codec.params))
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:
        raise ConfigError(f"manifest.json: pair '{pair.cut}': codec '{pair.codec.name}' parameters do not make a "
                          f"codec ({str(exc)[:120] or exc.__class__.__name__})", "re-export the pair") from None


def crossing_codecs(pair: ExportedPair) -> list[ActivationCodec]:
    """One codec per crossing tensor: the declared one for the first, plain bytes for the rest (exit
    side outputs and other tensors that cross as they are)."""
    return [codec_of(pair)] + [ActivationCodec() for _ in pair.crossing[1:]]
