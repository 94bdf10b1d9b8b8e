"""Which 4-bit graph keeps greedy speculative decoding lossless.

Speculative decoding is lossless only if the target's logits for a position do not depend on
whether the position was verified in a k-token pass or decoded one token at a time. A tiny random
Llama (logic, not a claim about a zoo model) exported both ways shows the difference:
MatMulNBits with int8 compute (``--weights int4``) quantises the activations per pass, so the
two ways round apart; fp32 compute on the same 4-bit weights (``--weights int4-f32``) leaves only
summation order.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch

from aiflow_cli.export.speculative import _export_lm
from aiflow_cli.models.speculative import KVSession


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return SimpleNamespace(extras={"hf_model": LlamaForCausalLM(cfg).eval()}, spec="tiny-llama")


def _k_pass_vs_single_steps(path, inputs, ids: list[int], past: int) -> float:
    """max |logits of a (len(ids) - past)-token pass - the same positions decoded one by one|"""
    session = KVSession.open(path, inputs, threads=1)
    session.feed(ids[:past])
    many = session.feed(ids[past:])
    session.reset()
    session.feed(ids[:past])
    one = np.stack([session.feed([token])[-1] for token in ids[past:]])
    return float(np.abs(many - one).max())


@pytest.mark.parametrize("weights, level, bound", [("int4", 4, None), ("int4-f32", 1, 1e-5)])
def test_a_k_token_verification_matches_single_steps_only_with_fp32_compute(tiny_llama, tmp_path, weights, level,
                                                                           bound):
    art = _export_lm(tiny_llama, tmp_path, f"{weights}.onnx", weights, "torchscript")
    graph = onnx.load(str(tmp_path / art.file))
    levels = {a.i for n in graph.graph.node if n.op_type == "MatMulNBits" for a in n.attribute
              if a.name == "accuracy_level"}
    assert levels == {level}
    ids = [int(i) for i in np.random.default_rng(0).integers(0, 512, 40)]
    diff = _k_pass_vs_single_steps(tmp_path / art.file, art.inputs, ids, past=32)
    if bound is None:
        assert diff > 1e-3  # int8 activations: the two ways round apart (7e-3 here, ~0.2 on Qwen's logits)
    else:
        assert diff < bound  # fp32 arithmetic: summation order only (3e-7 here)


def test_optimums_graph_decodes_like_aiflows_own_with_its_cache_layout(tiny_llama, tmp_path):
    """The default exporter (optimum's text-generation-with-past) and aiflow's KV graph are the same
    model: the same logits for a prompt and for each step after it, through one KVSession reading
    either layout (optimum's needs the attention mask and positions the session supplies)."""
    ours = _export_lm(tiny_llama, tmp_path, "ours.onnx", "fp32", "torchscript")
    theirs = _export_lm(tiny_llama, tmp_path, "optimum.onnx", "fp32", "optimum")
    names = [d.name for d in theirs.inputs]
    assert names[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert names[3:7] == ["past_key_values.0.key", "past_key_values.0.value", "past_key_values.1.key",
                          "past_key_values.1.value"]
    assert theirs.exporter.startswith("optimum-onnx")
    ids = [int(i) for i in np.random.default_rng(1).integers(0, 512, 24)]
    runs = []
    for art in (ours, theirs):
        session = KVSession.open(tmp_path / art.file, art.inputs, threads=1)
        runs.append(np.concatenate([session.feed(ids[:16])] + [session.feed([t]) for t in ids[16:]]))
    assert np.abs(runs[0] - runs[1]).max() < 1e-4
    assert np.abs(runs[0]).max() > 0.1  # not a pair of zero graphs
    diff = _k_pass_vs_single_steps(tmp_path / theirs.file, theirs.inputs, ids, past=16)
    assert diff < 1e-5


def test_int8_weights_quantise_every_matmul_and_the_embedding_and_round_per_pass(tiny_llama, tmp_path):
    """``--weights int8``: every MatMul (the LM head included) is DynamicQuantizeMatMul and the
    embedding is an int8 table; the logits stay close to fp32's, and, like int4 with int8 compute, a
    k-token pass and single steps round apart (activations are quantised per pass), which is why the
    export counts flips instead of requiring identity."""
    fp32 = _export_lm(tiny_llama, tmp_path, "fp32.onnx", "fp32", "optimum")
    int8 = _export_lm(tiny_llama, tmp_path, "int8.onnx", "int8", "optimum")
    graph = onnx.load(str(tmp_path / int8.file)).graph
    weights = graph.initializer
    ops = [n.op_type for n in graph.node]
    assert ops.count("DynamicQuantizeMatMul") == 2 * 7 + 1  # 2 layers x (q, k, v, o, gate, up, down) + the head
    left = [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in {t.name for t in weights}]
    assert not left  # the MatMuls left multiply activations (attention, rotary), not weights
    assert not [t.name for t in weights if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2
                and t.dims[0] * t.dims[1] >= 4096]  # no large float table left
    ids = [int(i) for i in np.random.default_rng(2).integers(0, 512, 24)]
    a = KVSession.open(tmp_path / fp32.file, fp32.inputs, threads=1).feed(ids)
    b = KVSession.open(tmp_path / int8.file, int8.inputs, threads=1).feed(ids)
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max()
    assert _k_pass_vs_single_steps(tmp_path / int8.file, int8.inputs, ids, past=16) > 1e-4


def test_int8_quantisation_reads_weights_and_constants_from_external_data(tiny_llama, tmp_path):
    """A large model arrives with every tensor in an external data file (optimum writes Constant
    values there too): the streamed int8 graph is one self-contained file, equal to the one made from
    the same model with inline weights."""
    from aiflow_cli.compress.int8_weights import quantize_int8_streaming
    from aiflow_cli.models.optimum_export import export_causal_lm_with_past, graph_decls

    inline = export_causal_lm_with_past(tiny_llama.extras["hf_model"], tmp_path / "inline")
    external = tmp_path / "external" / "model.onnx"
    external.parent.mkdir()
    onnx.save_model(onnx.load(str(inline)), str(external), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx_data", size_threshold=0, convert_attribute=True)
    assert any(a.t.data_location == onnx.TensorProto.EXTERNAL for n in onnx.load(str(external), load_external_data=False)
               .graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR)
    outs = []
    for name, source in (("a", inline), ("b", external)):
        quantize_int8_streaming(source, tmp_path / f"{name}.onnx")
        session = KVSession.open(tmp_path / f"{name}.onnx", graph_decls(tmp_path / f"{name}.onnx")[0], threads=1)
        outs.append(session.feed([5, 6, 7, 8]))
    (tmp_path / "external" / "model.onnx_data").unlink()  # the int8 graph does not need it
    KVSession.open(tmp_path / "b.onnx", graph_decls(tmp_path / "b.onnx")[0], threads=1)
    assert np.array_equal(outs[0], outs[1])
