"""Cut points derived from a traced torch.fx graph and from an ONNX graph."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from aiflow_cli.errors import ModelSourceError
from aiflow_cli.models import load_model
from aiflow_cli.models.graph_cuts import GraphNode, find_cuts

sys.path.insert(0, str(Path(__file__).parent))


def test_residual_branch_is_not_a_cut():
    # x -> a -> b -> add(a, b) -> c : inside the residual both a and b cross, so no cut after b
    nodes = [GraphNode("a", ("x",), ("a",)), GraphNode("b", ("a",), ("b",)),
             GraphNode("add", ("a", "b"), ("add",)), GraphNode("c", ("add",), ("c",)),
             GraphNode("out", ("c",), ("out",))]
    cuts = find_cuts(nodes, ["x"], ["out"], set())
    assert [c.after for c in cuts] == ["a", "add", "c"]
    assert all(len(c.crossing) == 1 for c in cuts)


def test_mask_input_used_by_every_layer_crosses_with_the_hidden_state():
    nodes = [GraphNode("emb", ("ids",), ("h0",)), GraphNode("l0", ("h0", "mask"), ("h1",)),
             GraphNode("l1", ("h1", "mask"), ("h2",)), GraphNode("pool", ("h2", "mask"), ("y",))]
    cuts = find_cuts(nodes, ["ids", "mask"], ["y"], set())
    assert [c.crossing for c in cuts] == [("mask", "h0"), ("mask", "h1"), ("mask", "h2")]


def test_constant_subgraphs_never_cross():
    nodes = [GraphNode("shape_const", ("w",), ("k",)), GraphNode("a", ("x", "k"), ("a",)),
             GraphNode("b", ("a", "k"), ("b",))]
    cuts = find_cuts(nodes, ["x"], ["b"], {"w"})
    assert [c.crossing for c in cuts] == [("a",)]


def test_py_source_segments_reproduce_the_module():
    model = load_model("py:fixtures.tiny_models:tiny_resnet")
    assert model.cuts == ["a", "relu", "add", "c", "relu_1", "mean"]
    x = model.make_input(1, None)
    with torch.no_grad():
        assert torch.allclose(model.run_chain(x), model.whole(x), atol=1e-6)


def test_py_source_must_return_module_and_example():
    with pytest.raises(ModelSourceError, match="must return"):
        load_model("py:fixtures.tiny_models:not_a_pair")


def test_onnx_source_finds_cuts_and_runs_segments(tmp_path):
    from fixtures.tiny_models import tiny_resnet

    from aiflow_cli.onnx_io import export_onnx

    module, example = tiny_resnet()
    path = tmp_path / "tiny.onnx"
    path.write_bytes(export_onnx(module, example, ["x"], ["y"], {"x": {0: "batch"}, "y": {0: "batch"}}).SerializeToString())
    model = load_model(str(path))
    assert len(model.cuts) >= 4
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model.run_chain(x), module(x), atol=1e-5)


def test_onnx_profile_counts_macs_from_the_graph(tmp_path):
    from fixtures.tiny_models import tiny_resnet

    from aiflow_cli.onnx_io import export_onnx
    from aiflow_cli.profiling.measure import profile_model

    module, example = tiny_resnet()
    path = tmp_path / "tiny.onnx"
    path.write_bytes(export_onnx(module, example, ["x"], ["y"], {"x": {0: "batch"}}).SerializeToString())
    report = profile_model(load_model(str(path)), repeats=2, warmup=0)
    # 3 convs over 16x16 (3->8, 8->8, 8->8, 3x3) + linear 8->4
    expected = 16 * 16 * 8 * (3 * 9 + 8 * 9 + 8 * 9) + 8 * 4
    assert report.total.macs == expected
    assert report.total.params == sum(p.numel() for p in module.parameters())
    assert report.settings.runtime == "onnxruntime"
