"""Foundations of the learned bottleneck (issue #4): density, real range coding, the codec protocol.

Tiny synthetic tensors only; training on real features is exercised by the benchmark.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from aiflow_cli.codecs.entropy import HEADER_BYTES, EntropyTables, FactorizedDensity
from aiflow_cli.codecs.learned import BottleneckNet, LearnedBottleneckCodec
from aiflow_cli.codecs.registry import codec_from_spec


def _latents() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.round(torch.randn(3, 4, 5, 5) * torch.tensor([0.5, 1.0, 2.0, 4.0]).view(1, 4, 1, 1))


def test_density_assigns_probabilities_that_sum_to_one_over_the_integers():
    density = FactorizedDensity(2)
    grid = torch.arange(-200, 201, dtype=torch.float32).view(1, 1, -1, 1).expand(1, 2, -1, 1).contiguous()
    total = density.likelihood(grid).sum(2)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-3)


def test_range_coding_is_bit_exact_and_close_to_the_information_content():
    q = _latents()
    density = FactorizedDensity(4)
    tables = density.tables(q.amin((0, 2, 3)), q.amax((0, 2, 3)))
    data = tables.encode(q.int().numpy())
    assert np.array_equal(tables.decode(data), q.int().numpy())
    estimated = tables.bits(q.int().numpy()) / 8
    assert len(data) - HEADER_BYTES <= estimated * 1.03 + 4  # 32-bit words: at most 4 bytes of padding


def test_histogram_tables_code_what_they_were_fitted_on_cheaply():
    q = _latents().int().numpy()
    lo = q.min(axis=(0, 2, 3))
    pmfs = [np.bincount((q[:, c] - lo[c]).reshape(-1)) + 1.0 for c in range(4)]
    tables = EntropyTables([int(v) for v in lo], [p / p.sum() for p in pmfs])
    assert len(tables.encode(q)) < q.size  # fewer than one byte per symbol


def test_learned_codec_round_trip_matches_its_own_decoder_and_rebuilds_from_spec():
    torch.manual_seed(0)
    x = torch.randn(6, 8, 4, 4)
    net = BottleneckNet(8, 3, hidden=16)
    net.init_from(x)
    net.eval()
    net.fit_support([x])
    codec = LearnedBottleneckCodec(net)
    wire = codec.device_module()(x[:1]).numpy()
    assert wire.dtype == np.int32 and wire.shape == (1, 3, 4, 4)
    again = codec_from_spec(codec.spec())
    assert np.array_equal(again.unpack(codec.pack(wire)), wire)
    restored, nbytes = codec.roundtrip(x[:1])
    assert restored.shape == x[:1].shape and nbytes < wire.size * 4


def test_pca_initialisation_reconstructs_low_rank_features():
    torch.manual_seed(0)
    basis = torch.randn(3, 8)
    x = torch.einsum("nchw,cd->ndhw", torch.randn(20, 3, 4, 4), basis) * 5
    net = BottleneckNet(8, 3, hidden=16).eval()
    net.init_from(x, latent_scale=50.0)  # fine quantisation: reconstruction limited by rank only
    net.fit_support([x])
    with torch.no_grad():
        x_hat, _ = net(x)
    assert (x_hat - x).abs().mean() < 0.05 * x.abs().mean()


def test_training_lowers_the_rate_and_keeps_the_task():
    from aiflow_cli.split.bottleneck.features import CutFeatures
    from aiflow_cli.split.bottleneck.train import TrainSettings, train_bottleneck

    torch.manual_seed(0)
    server = nn.Sequential(nn.Conv2d(8, 5, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    train_x, eval_x = torch.randn(64, 8, 4, 4), torch.randn(16, 8, 4, 4)
    with torch.no_grad():
        train_logits, eval_logits = server(train_x), server(eval_x)
    feats = CutFeatures("c", train_x, train_logits, train_logits.argmax(-1), eval_x, eval_logits,
                        eval_logits.argmax(-1), {}, {})
    low = train_bottleneck(server, feats, beta=1e-4, settings=TrainSettings(channels=4, epochs=3, batch_size=16))
    high = train_bottleneck(server, feats, beta=1e-1, settings=TrainSettings(channels=4, epochs=3, batch_size=16))
    assert high.estimated_bytes_per_input < low.estimated_bytes_per_input
    assert low.bytes_per_input <= low.estimated_bytes_per_input * 1.03 + HEADER_BYTES + 4
    assert low.agreement >= 0.5
