"""Activation codecs: bytes on the wire, round trips, and rebuilding from the manifest."""

from __future__ import annotations

import pytest
import torch

from aiflow_cli.codecs import make_codec
from aiflow_cli.codecs.registry import codec_from_spec
from aiflow_cli.errors import InputError


def _activation() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.relu(torch.randn(2, 8, 6, 6) * torch.arange(1, 9).reshape(1, 8, 1, 1))


def test_fp32_is_bit_exact_and_sends_4_bytes_per_value():
    x = _activation()
    back, nbytes = make_codec("fp32").roundtrip(x)
    assert torch.equal(back, x) and nbytes == x.numel() * 4


def test_fp16_halves_the_bytes():
    x = _activation()
    back, nbytes = make_codec("fp16").roundtrip(x)
    assert nbytes == x.numel() * 2
    assert torch.allclose(back, x, rtol=1e-3)


@pytest.mark.parametrize("name", ["int8-tensor", "int8-channel"])
def test_int8_error_is_within_half_a_step(name):
    x = _activation()
    codec = make_codec(name)
    codec.calibrate([x])
    back, nbytes = codec.roundtrip(x)
    assert nbytes == x.numel()
    step = codec.scale.expand_as(x)
    assert ((back - x).abs() <= step / 2 + 1e-6).all()


def test_per_channel_is_more_accurate_than_per_tensor_when_channel_ranges_differ():
    x = _activation()
    errors = {}
    for name in ("int8-tensor", "int8-channel"):
        codec = make_codec(name)
        codec.calibrate([x])
        errors[name] = (codec.roundtrip(x)[0] - x).abs().mean()
    assert errors["int8-channel"] < errors["int8-tensor"]


def test_zstd_sends_fewer_bytes_for_sparse_activations():
    x = _activation()
    plain, packed = make_codec("int8-channel"), make_codec("int8-channel+zstd")
    for c in (plain, packed):
        c.calibrate([x])
    assert packed.roundtrip(x)[1] < plain.roundtrip(x)[1]
    assert torch.equal(packed.roundtrip(x)[0], plain.roundtrip(x)[0])


def test_codec_rebuilt_from_its_spec_decodes_identically():
    x = _activation()
    codec = make_codec("int8-channel+zstd")
    codec.calibrate([x])
    again = codec_from_spec(codec.spec())
    assert torch.equal(again.roundtrip(x)[0], codec.roundtrip(x)[0])


def test_unknown_codec_lists_the_valid_ones():
    with pytest.raises(InputError, match="int8-channel"):
        make_codec("int4")


def test_uncalibrated_int8_refuses_to_export():
    with pytest.raises(InputError, match="not calibrated"):
        make_codec("int8-tensor").device_module()
