"""Foundations of the learned bottleneck (issue #4): density, real range coding, the codec protocol.

Tiny synthetic tensors only; the real model is in tests/test_bottleneck_split.py and the benchmark.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from aiflow_cli.codecs.entropy import HEADER_BYTES, EntropyTables, FactorizedDensity
from aiflow_cli.codecs.learned import (
    BottleneckNet,
    LearnedBottleneckCodec,
    step_for_beta,
)
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


def _fitted_net(x: torch.Tensor, channels: int, step: float, fisher: torch.Tensor | None = None) -> BottleneckNet:
    net = BottleneckNet(x.shape[1], channels)
    net.init_task_aware(x, torch.eye(x.shape[1]) if fisher is None else fisher, step)
    net.eval()
    net.fit_support([x])
    return net


def test_learned_codec_round_trip_matches_its_own_decoder_and_rebuilds_from_spec():
    torch.manual_seed(0)
    x = torch.randn(6, 8, 4, 4)
    codec = LearnedBottleneckCodec(_fitted_net(x, 3, 0.5))
    wire = codec.device_module()(x[:1]).numpy()
    assert wire.dtype == np.int32 and wire.shape == (1, 3, 4, 4)
    again = codec_from_spec(codec.spec())
    assert np.array_equal(again.unpack(codec.pack(wire)), wire)
    restored, nbytes = codec.roundtrip(x[:1])
    assert restored.shape == x[:1].shape and nbytes < wire.size * 4


def test_task_aware_start_reconstructs_low_rank_features():
    torch.manual_seed(0)
    basis = torch.randn(3, 8)
    x = torch.einsum("nchw,cd->ndhw", torch.randn(20, 3, 4, 4), basis) * 5 + 2
    net = _fitted_net(x, 3, 0.01)  # fine step: the error is limited by rank only
    with torch.no_grad():
        x_hat, _ = net(x)
    assert (x_hat - x).abs().mean() < 0.01 * x.abs().mean()


def test_directions_the_task_ignores_cost_no_bits():
    """With Fisher information only on channel 0, a coarse step leaves the other latents at zero."""
    torch.manual_seed(0)
    x = torch.randn(30, 4, 4, 4) * torch.tensor([1.0, 3.0, 3.0, 3.0]).view(1, 4, 1, 1)
    fisher = torch.diag(torch.tensor([100.0, 1e-4, 1e-4, 1e-4]))
    task = _fitted_net(x, 4, 1.0, fisher)
    blind = _fitted_net(x, 4, 1.0)
    with torch.no_grad():
        q_task, q_blind = task.quantize(task.encode(x)), blind.quantize(blind.encode(x))
    assert (q_task != 0).float().mean() < 0.3 < (q_blind != 0).float().mean()
    with torch.no_grad():  # and channel 0, the one the task needs, survives
        err = (task.decode(q_task) - x)[:, 0].abs().mean()
    assert err < 0.1 * x[:, 0].abs().mean()


def test_a_larger_beta_starts_from_a_coarser_step():
    assert 0 < step_for_beta(1e-5) < step_for_beta(1e-4) < step_for_beta(1e-3)


def test_training_lowers_the_rate_and_keeps_the_task():
    from aiflow_cli.split.bottleneck.features import CutFeatures, SplitFeatures
    from aiflow_cli.split.bottleneck.train import TrainSettings, train_bottleneck

    torch.manual_seed(0)
    server = nn.Sequential(nn.Conv2d(8, 5, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()

    def part(n: int) -> SplitFeatures:
        x = torch.randn(n, 8, 4, 4)
        with torch.no_grad():
            logits = server(x)
        return SplitFeatures(x=x, logits=logits, labels=logits.argmax(-1), pooled={}, penultimate=logits)

    feats = CutFeatures("c", train=part(64), validation=part(16), test=part(16), roots=[])
    settings = TrainSettings(epochs=3, batch_size=16, density_warmup_steps=100)
    low = train_bottleneck(server, feats, beta=1e-4, settings=settings)
    high = train_bottleneck(server, feats, beta=1e-1, settings=settings)
    assert high.test.estimated_bytes_per_input < low.test.estimated_bytes_per_input
    assert low.test.bytes_per_input - HEADER_BYTES <= low.test.estimated_bytes_per_input * 1.03 + 4
    assert low.test.scores.agreement.value >= 0.75 and low.test.scores.kl < high.test.scores.kl
    assert low.test.scores.agreement.n == 16 and low.validation.scores.agreement.n == 16


def test_uniform_bytes_at_equal_agreement_interpolates_on_the_upper_envelope():
    from aiflow_cli.split.bottleneck.api import interpolate_bytes_at

    curve = [(1000.0, 0.80), (2000.0, 0.90), (1500.0, 0.70), (4000.0, 0.95)]  # (1500, 0.70) is dominated
    assert interpolate_bytes_at(curve, 0.75) == 1000.0
    assert interpolate_bytes_at(curve, 0.90) == pytest.approx(2000.0)
    assert 1000.0 < interpolate_bytes_at(curve, 0.85) < 2000.0
    assert interpolate_bytes_at(curve, 0.99) is None


def test_two_by_two_blocks_round_trip_odd_sizes_and_rebuild_from_spec():
    """patch 2 on a 5x5 activation: the wire is 3x3 blocks, the server gets 5x5 back."""
    from aiflow_cli.split.bottleneck.train import task_fisher

    torch.manual_seed(0)
    x = torch.randn(10, 4, 5, 5) * 3 + 1
    server = nn.Sequential(nn.Conv2d(4, 3, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    fisher = task_fisher(server, x, patch=2)
    assert fisher.shape == (4, 16, 16)  # whole blocks, right edge, bottom edge, corner
    net = BottleneckNet(4, 16, patch=2)
    net.init_task_aware(x, torch.eye(16), 0.01)  # fine step, full rank: reconstruction is near exact
    net.eval()
    net.fit_support([x])
    codec = LearnedBottleneckCodec(net)
    wire = codec.device_module()(x[:1])
    assert tuple(wire.shape) == (1, 16, 3, 3)
    back = codec.server_module()(wire)
    assert back.shape == x[:1].shape and (back - x[:1]).abs().max() < 0.02
    again = codec_from_spec(codec.spec())
    assert again.net.patch == 2 and again.net.size == (5, 5)
    assert np.array_equal(again.unpack(codec.pack(wire.numpy())), wire.numpy())


def test_blocks_over_an_odd_edge_code_only_their_real_positions():
    """A 2x2 block over the right edge of a 5x5 activation holds 2 real positions (8 numbers of 4
    channels), the corner block 1: their transforms have 8 and 4 channels, the rest of the wire is
    zero there, and none of it is coded."""
    from aiflow_cli.codecs.learned import block_kinds

    kind_map, real = block_kinds((5, 5), 2)
    assert kind_map == [[0, 0, 1], [0, 0, 1], [2, 2, 3]] and real == [(0, 1, 2, 3), (0, 2), (0, 1), (0,)]
    torch.manual_seed(0)
    x = torch.randn(10, 4, 5, 5) * 3 + 1
    net = BottleneckNet(4, 16, patch=2)
    net.init_task_aware(x, torch.eye(16), 0.5)
    net.eval()
    net.fit_support([x])
    assert [k.channels for k in net.kinds] == [16, 8, 8, 4]
    wire = LearnedBottleneckCodec(net).device_module()(torch.randn(3, 4, 5, 5) * 50)  # far outside the training range
    assert (wire[:, 8:, :, 2] == 0).all() and (wire[:, 8:, 2, :] == 0).all() and (wire[:, 4:, 2, 2] == 0).all()
    tables = net.tables()
    assert len(tables.pmfs) == 16 + 8 + 8 + 4
    # bits are counted for the used channels only: 4 whole blocks x 16 + 2 x 8 + 2 x 8 + 4 symbols
    uniform = EntropyTables(tables.offsets, [np.ones(len(p)) / len(p) for p in tables.pmfs], tables.kind_map,
                            tables.kind_channels)
    expected = sum(np.log2(len(p)) * n for p, n in zip(tables.pmfs, [4] * 16 + [2] * 16 + [1] * 4))
    assert uniform.bits(wire[:1].numpy()) == pytest.approx(expected)


def test_a_manifest_from_before_block_kinds_is_refused_where_blocks_overhang_an_edge():
    """Its tables code every channel of every block with one shared transform's statistics:
    decoding it with per-kind tables would be wrong, so it is refused with the fix."""
    from aiflow_cli.errors import ConfigError

    torch.manual_seed(0)
    x = torch.randn(10, 4, 5, 5)
    net = BottleneckNet(4, 16, patch=2)
    net.init_task_aware(x, torch.eye(16), 0.5)
    net.eval()
    net.fit_support([x])
    params = dict(LearnedBottleneckCodec(net).spec().params)
    for key in ("kind_map", "kind_channels"):
        del params[key]
    with pytest.raises(ConfigError, match="re-export"):
        LearnedBottleneckCodec.from_params(params)


def test_full_shrinkage_keeps_the_transform_on_the_activations_own_axes():
    """Shrinkage pulls the estimated covariance (and Fisher) toward their diagonals: at 1 the KLT
    of two strongly correlated channels no longer mixes them, at 0 it rotates them by 45 degrees.
    Measured at block12 of EfficientNet-Lite0 (3x3 blocks, 1,728 dimensions): 0.2 lowered the
    validation loss from 0.1111 to 0.1076 at beta 1e-5, and the training inputs' KL moved closer
    to unseen images'."""
    torch.manual_seed(0)
    a = torch.randn(400, 1, 2, 2)
    x = torch.cat([a, a + 0.1 * torch.randn_like(a)], 1) * torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
    mixed, diagonal = BottleneckNet(2, 2), BottleneckNet(2, 2)
    mixed.init_task_aware(x, torch.eye(2), 1.0, shrinkage=0.0)
    diagonal.init_task_aware(x, torch.eye(2), 1.0, shrinkage=1.0)
    rows_mixed = mixed.kinds[0].analysis.abs()
    rows_diag = diagonal.kinds[0].analysis.abs()
    assert (rows_mixed.min(1).values > 0.3).all()  # both channels in every latent
    assert torch.allclose(rows_diag.min(1).values, torch.zeros(2), atol=1e-6)  # one channel per latent
    assert rows_diag.argmax(1).tolist() == [1, 0]  # the stronger channel first


def test_dequantize_moves_each_nonzero_symbol_outward_by_its_own_level_and_leaves_zero():
    net = BottleneckNet(1, 1)
    with torch.no_grad():
        net.reconstruction.copy_(torch.tensor([0.1, 0.2, 0.3]))
    q = torch.tensor([-5.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 7.0])
    expected = torch.tensor([-5.3, -2.2, -1.1, 0.0, 1.1, 2.2, 3.3, 7.3])
    assert torch.allclose(net.dequantize(q), expected)
    assert torch.equal(BottleneckNet(1, 1).dequantize(q), q)  # a codec trained without offsets: q as it was


def test_reconstruction_offsets_pull_rounded_values_in_where_the_task_is_linear():
    """With a linear task the best place for a rounded symbol is the mean of what rounds to it:
    latents of scale 0.4 round to +-1 from 0.5..1.5, mostly near 0.5, so the offset must come out
    inward (at EfficientNet-Lite0's block15 it comes out outward: there the rest of the model is
    not linear). The bytes cannot move: only the server's side is fitted."""
    from aiflow_cli.split.bottleneck.features import SplitFeatures
    from aiflow_cli.split.bottleneck.train import (
        TrainSettings,
        fit_reconstruction,
        validation_loss,
    )

    torch.manual_seed(0)
    server = nn.Sequential(nn.Flatten(), nn.Linear(4 * 2 * 2, 6)).eval()
    with torch.no_grad():
        server[1].weight.mul_(8)

    def part(n: int) -> SplitFeatures:
        x = torch.distributions.Laplace(0.0, 0.4).sample((n, 4, 2, 2))
        with torch.no_grad():
            logits = server(x)
        return SplitFeatures(x=x, logits=logits, labels=logits.argmax(-1), pooled={}, penultimate=logits)

    train, validation = part(800), part(200)
    for p in server.parameters():
        p.requires_grad_(False)
    net = _fitted_net(train.x, 4, 1.0)
    with torch.no_grad():
        symbols = net.quantize(net.encode(validation.x))
    before = validation_loss(net, server, validation, beta=0.0)
    fit_reconstruction(net, server, train.x, train.logits, validation, 0.0, TrainSettings(reconstruction_epochs=4))
    assert net.reconstruction[0] < -0.05
    assert validation_loss(net, server, validation, beta=0.0) < 0.9 * before
    with torch.no_grad():
        assert torch.equal(net.quantize(net.encode(validation.x)), symbols)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_the_server_module_applies_the_offsets_in_onnx_as_in_pytorch(tmp_path, exporter):
    import onnxruntime as ort

    from aiflow_cli.onnx_io import export_onnx_file

    torch.manual_seed(0)
    x = torch.randn(6, 8, 4, 4)
    codec = LearnedBottleneckCodec(_fitted_net(x, 3, 0.5))
    with torch.no_grad():
        codec.net.reconstruction.copy_(torch.tensor([0.25, -0.1, 0.05]))
    wire = codec.device_module()(x)
    assert set(wire.abs().unique().tolist()) >= {0, 1, 2, 3}
    export_onnx_file(codec.server_module(), (wire,), tmp_path / "server.onnx", ["q"], ["x"], exporter=exporter)
    session = ort.InferenceSession(str(tmp_path / "server.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"q": wire.numpy()})
    with torch.no_grad():
        expected = codec.server_module()(wire)
        plain = codec.net.decode(wire.float())
    assert np.allclose(out, expected.numpy(), atol=1e-5)
    assert not np.allclose(out, plain.numpy(), atol=1e-3)  # the offsets are in the graph
