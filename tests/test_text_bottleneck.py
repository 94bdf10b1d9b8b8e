"""The per-token bottleneck for text models: the claims on the real zoo models (small samples of
WikiText-2), the choice rule, the robust uniform baseline and the command's refusals."""

from __future__ import annotations

import numpy as np
import torch

from aiflow_cli.cli.main import app
from aiflow_cli.export.lm_pair import LMPairRunner, export_lm_split
from aiflow_cli.schemas.figures import Mean
from aiflow_cli.schemas.text_bottleneck import TextRatePoint, TextScores
from aiflow_cli.serve.device.lm import LMDevice
from aiflow_cli.serve.server.halves import LMPairModel
from aiflow_cli.serve.wire import frame
from aiflow_cli.split.bottleneck.baselines import UniformQuantizer
from aiflow_cli.split.bottleneck.text import cheapest_within, run_text_bottleneck
from aiflow_cli.stats import clustered_mean


def test_minilm_bottleneck_keeps_cosine_at_under_a_third_of_int8_zstd_bytes(minilm):
    report, codecs = run_text_bottleneck(minilm, "layer4", [1e-5], 0.99, counts=(160, 40),
                                         uniform_steps=(0.5, 0.75, 1.0))
    op = report.operating_point
    assert op.beta == 1e-5 and op.meets_min_fidelity_on_validation
    assert op.test_fidelity.value >= 0.99 and op.test_fidelity.n == 40
    assert op.ratio_to_int8_zstd <= 0.35  # full run (300 training sentences, 200 test): 0.28x at this beta
    assert op.uniform_bytes_at_equal_fidelity is not None and op.test_bytes_per_token < 0.8 * op.uniform_bytes_at_equal_fidelity
    # the bytes are real: one range-coded message per sentence, decoded back to the same symbols
    codec = codecs[1e-5]
    h = torch.randn(1, 9, 384) * 0.3
    x = h.reshape(-1, 384)[:, :, None, None]
    wire = codec.device_module()(x).numpy()
    assert np.array_equal(codec.unpack(codec.pack(wire)), wire)


def test_smollm2_layer15_bottleneck_keeps_agreement_at_under_half_the_int8_zstd_bytes_and_exports_a_coded_pair(
        smollm2, runner, tmp_path):
    report, codecs = run_text_bottleneck(smollm2, "layer15", [6e-6], 0.95, counts=(24, 8), uniform_steps=(0.3,))
    op = report.operating_point
    learned = report.points[0]
    int8 = next(b for b in report.baselines if b.codec == "int8-zstd")
    assert report.test_tokens == 8 * 128 and learned.test.kl is not None
    assert op.test_fidelity.value >= 0.95  # full run (40 test windows): see docs/benchmarks.md
    assert op.ratio_to_int8_zstd <= 0.5
    assert learned.test.fidelity.value > int8.test.fidelity.value  # int8 min/max ranges lose to the outliers

    # the exported pair sends int32 symbols per token, entropy-coded per step, and decodes (KV cache,
    # greedy) token for token as its training graph does; `split verify` rebuilds that graph from disk
    export = tmp_path / "coded"
    manifest = export_lm_split(smollm2, ["layer15"], export, codecs={"layer15": codecs[6e-6]}, exporter="torchscript")
    pair = manifest.pairs[0]
    assert pair.codec.name == "learned-bottleneck" and pair.kv_cache
    assert [(d.name, d.dtype) for d in pair.crossing] == [("symbols", "int32")]
    assert pair.verification.passed and pair.verification.agreement == 1.0
    assert "training graph" in pair.verification.reference
    ids = smollm2.tokenizer("The history of the city", return_tensors="np")["input_ids"]
    tokens, _, sent = LMPairRunner(export, pair).generate(ids, 8)
    assert len(tokens) == 8 and sent < 0.5 * 576 * (ids.shape[1] + 7)  # under half of int8 for every token sent
    result = runner.invoke(app, ["split", "verify", str(export)])
    assert result.exit_code == 0, result.output

    # served: the device frames its range-coded symbols, the server's session decodes them and answers
    # the same greedy tokens as the offline pair
    device, server = LMDevice(export, manifest, pair), LMPairModel(export, "coded", pair)
    past, step, served, position = device._empty(), ids, [], 0
    for i in range(8):
        symbols, past = device._hidden(step, past)
        data = np.frombuffer(frame(device.codec.pack(np.ascontiguousarray(symbols))), dtype=np.uint8)
        out, params = server.infer({"symbols": data}, {"sequence_id": "s", "sequence_start": i == 0,
                                                       "position": position})
        position, step = params["position"], out["next_token"]
        served.append(int(step[0, 0]))
    assert served == tokens


def _point(val: Mean, test_bytes: float, beta: float) -> TextRatePoint:
    scores = TextScores(fidelity=val)
    return TextRatePoint(codec="learned", beta=beta, bytes_per_token=test_bytes, validation_bytes_per_token=test_bytes,
                         validation=scores, test=scores)


def test_the_operating_point_needs_its_whole_validation_interval_above_the_floor():
    cheap_but_unsure = _point(Mean(value=0.955, n=40, ci95=(0.945, 0.962)), 200.0, 1e-5)
    sure = _point(Mean(value=0.965, n=40, ci95=(0.958, 0.971)), 240.0, 6e-6)
    chosen, ok = cheapest_within([cheap_but_unsure, sure], 0.95)
    assert ok and chosen.beta == 6e-6
    chosen, ok = cheapest_within([cheap_but_unsure], 0.97)
    assert not ok and chosen.beta == 1e-5  # nothing qualifies: the most faithful, flagged


def test_robust_uniform_steps_ignore_a_few_huge_outlier_tokens():
    torch.manual_seed(0)
    x = torch.randn(2000, 4, 1, 1)
    x[:5, 0] = 500.0  # attention-sink-like tokens in one channel
    plain, robust = UniformQuantizer(x, 0.5), UniformQuantizer(x, 0.5, robust=True)
    ordinary = x[100:200]
    err_plain = (plain.roundtrip(ordinary)[0] - ordinary)[:, 0].abs().mean()
    err_robust = (robust.roundtrip(ordinary)[0] - ordinary)[:, 0].abs().mean()
    assert err_robust < 0.2 < err_plain
    back, _ = robust.roundtrip(x[:5])  # the outliers still pass (the support covers them)
    assert torch.allclose(back[:, 0], x[:5, 0], atol=0.5)


def test_clustered_mean_resamples_whole_windows():
    # two windows that disagree completely: the token-level share would look tight, the window-level is not
    m = clustered_mean([100.0, 0.0], [100, 100])
    assert m.value == 0.5 and m.n == 2 and m.ci95[0] <= 0.0 + 1e-9 and m.ci95[1] >= 1.0 - 1e-9
    same = clustered_mean([90.0, 45.0, 9.0], [100, 50, 10])
    assert same.value == 0.9 and same.ci95 == (0.9, 0.9)


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_text_bottleneck_refuses_what_it_cannot_do_yet(runner, tmp_path):
    export = tmp_path / "pair"
    line = _one_error_line(runner.invoke(app, ["split", "bottleneck", "zoo:minilm-l6", "--cut", "layer4",
                                               "--export", str(export)]))
    assert "causal LMs only" in line and "--export" in line and not export.exists()
    line = _one_error_line(runner.invoke(app, ["split", "bottleneck", "zoo:minilm-l6", "--cut", "layer4",
                                               "--min-fidelity", "1.5"]))
    assert "--min-fidelity must be in (0, 1]" in line
    line = _one_error_line(runner.invoke(app, ["split", "bottleneck", "zoo:minilm-l6", "--cut", "embeddings"]))
    assert "not after a transformer layer" in line
    line = _one_error_line(runner.invoke(app, ["split", "bottleneck", "zoo:efficientnet-lite0", "--cut", "block12",
                                               "--min-fidelity", "0.9"]))
    assert "--min-fidelity is for text models" in line


def test_a_channel_with_one_possible_symbol_costs_nothing_and_decodes():
    from aiflow_cli.codecs.entropy import EntropyTables

    tables = EntropyTables([3, -2], [np.array([1.0]), np.array([0.25, 0.5, 0.25])])
    q = np.array([3, -1, 3, 0, 3, -2], dtype=np.int32).reshape(3, 2, 1, 1)
    assert np.array_equal(tables.decode(tables.encode(q)), q)
    assert tables.bits(q) == 5.0  # 1 + 2 + 2 bits for the second channel, nothing for the constant one
