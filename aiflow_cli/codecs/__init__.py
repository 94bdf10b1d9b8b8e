"""Activation codecs: what turns the tensor crossing a cut into bytes on the wire, and back."""

from aiflow_cli.codecs.base import ActivationCodec, CodecSpec, EncodedTensor
from aiflow_cli.codecs.registry import CODEC_NAMES, make_codec

__all__ = ["ActivationCodec", "CodecSpec", "EncodedTensor", "CODEC_NAMES", "make_codec"]
