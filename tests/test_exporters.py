"""Pairs come from PyTorch's dynamo exporter; where it fails, TorchScript writes the graph and says so."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from aiflow_cli.cli.main import app
from aiflow_cli.codecs import make_codec
from aiflow_cli.export.api import export_split
from aiflow_cli.export.pair import save_artifact
from aiflow_cli.onnx_io import ExporterFallbackWarning, export_onnx, exporter_of


def _fallbacks(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ExporterFallbackWarning)]


def test_an_efficientnet_pair_comes_from_the_dynamo_exporter_verifies_and_runs_at_any_batch(runner, tmp_path,
                                                                                            efficientnet):
    """The default exporter, by the command a user runs; traced at batch 1, the graph still takes batch 3
    (torch.export would bake a size-1 batch into the graph as a constant)."""
    out = tmp_path / "pair"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(app, ["split", "zoo:efficientnet-lite0", "--cut", "block9", "--export", str(out),
                                     "--no-triton", "--verify-count", "4"])
    assert result.exit_code == 0, result.output
    assert "dynamo exporter" in result.stdout and not _fallbacks(caught)
    pair = json.loads((out / "manifest.json").read_text())["pairs"][0]
    assert pair["device"]["exporter"] == pair["server"]["exporter"] == "dynamo"
    assert pair["verification"]["passed"] and pair["device"]["inputs"][0]["shape"][0] == "batch"
    images = torch.randn(3, 3, 224, 224)
    device = ort.InferenceSession(str(out / pair["device"]["file"]))
    server = ort.InferenceSession(str(out / pair["server"]["file"]))
    wire = device.run(None, {pair["device"]["inputs"][0]["name"]: images.numpy()})
    logits = server.run(None, {d["name"]: w for d, w in zip(pair["server"]["inputs"], wire)})[0]
    with torch.no_grad():
        reference = efficientnet.whole(images).numpy()
    assert logits.shape == (3, 1000) and np.abs(logits - reference).max() < 1e-3 * np.abs(reference).max()


def test_a_minilm_pair_comes_from_the_dynamo_exporter_and_verifies(minilm, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = export_split(minilm, ["layer3"], {"layer3": make_codec("fp32")}, tmp_path / "pair", triton=False,
                                verify_count=4)
    pair = manifest.pairs[0]
    assert (pair.device.exporter, pair.server.exporter) == ("dynamo", "dynamo") and not _fallbacks(caught)
    assert pair.verification.passed and pair.verification.mean_cosine > 0.9999


class _DataDependent(nn.Module):
    """A Python branch on a tensor's value: torch.export cannot trace it; TorchScript's tracer records
    the branch the example took."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x - 1


def test_a_graph_the_dynamo_exporter_cannot_trace_falls_back_to_torchscript_visibly(tmp_path):
    with pytest.warns(ExporterFallbackWarning, match="dynamo exporter failed on _DataDependent"):
        proto = export_onnx(_DataDependent(), torch.ones(2, 3), ["x"], ["y"], {"x": {0: "batch"}})
    assert exporter_of(proto).startswith("torchscript (dynamo failed: ")
    y = ort.InferenceSession(proto.SerializeToString()).run(None, {"x": np.ones((4, 3), np.float32)})[0]
    assert y.shape == (4, 3) and (y == 2).all()
    artifact = save_artifact(tmp_path, "pair/device.onnx", proto, [], [])
    assert artifact.exporter == exporter_of(proto)  # the manifest names the fallback and its reason


def test_an_unknown_exporter_is_refused_before_any_work(runner, tmp_path):
    result = runner.invoke(app, ["split", "zoo:efficientnet-lite0", "--cut", "block3", "--export",
                                 str(tmp_path / "pair"), "--exporter", "onnxscript"])
    assert result.exit_code == 2 and "--exporter must be one of dynamo, torchscript" in result.stderr
    assert not (tmp_path / "pair").exists()


class _Blocks(nn.Module):
    """Pads 7x7 to 8x8 and packs 2x2 blocks: sizes computed from the input's shape at run time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from aiflow_cli.codecs.learned import space_to_depth

        return torch.round(space_to_depth(x, 2)).to(torch.int32)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_an_output_size_computed_from_shapes_is_declared_as_the_fixed_size_it_is(exporter):
    # the manifest declares (batch, 12, 4, 4); a graph saying (batch, 12, Cast..._dim_2, ...) fails split verify
    proto = export_onnx(_Blocks(), torch.randn(1, 3, 7, 7), ["x"], ["q"], {"x": {0: "batch"}, "q": {0: "batch"}},
                        exporter=exporter)
    dims = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 12, 4, 4]
    session = ort.InferenceSession(proto.SerializeToString())
    assert session.run(None, {"x": np.zeros((3, 3, 7, 7), np.float32)})[0].shape == (3, 12, 4, 4)
