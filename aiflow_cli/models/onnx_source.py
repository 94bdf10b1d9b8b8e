"""ONNX files as a model source: cut points on the ONNX graph, segments run in onnxruntime.

Each segment is extracted with ``onnx.utils.Extractor`` (inputs = the tensors crossing the
previous cut) and wrapped in :class:`OnnxSegment`, a module with the same one-value calling
convention as torch segments, so profiling and splitting treat both alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from aiflow_cli.errors import ModelSourceError
from aiflow_cli.models.graph_cuts import GraphNode, find_cuts
from aiflow_cli.models.segmented import Segment, SegmentedModel
from aiflow_cli.tensors import tensors_of

__all__ = ["OnnxSegment", "load_onnx", "onnx_macs", "call_overhead_ms"]

_NP_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.INT64: np.int64,
             onnx.TensorProto.INT32: np.int32, onnx.TensorProto.FLOAT16: np.float16}


class OnnxSegment(nn.Module):
    """Run an ONNX (sub)graph in onnxruntime behind a torch-module interface."""

    def __init__(self, proto: onnx.ModelProto, threads: int | None = None) -> None:
        super().__init__()
        from aiflow_cli.ort import ort_session

        self.proto = proto
        self.session = ort_session(proto.SerializeToString(), threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def forward(self, x: Any) -> Any:
        feeds = {name: t.detach().cpu().numpy() for name, t in zip(self.input_names, tensors_of(x))}
        outs = [torch.from_numpy(np.asarray(o)) for o in self.session.run(self.output_names, feeds)]
        return outs[0] if len(outs) == 1 else tuple(outs)


def call_overhead_ms(repeats: int = 200) -> float:
    """Fixed cost of one onnxruntime ``run`` call (an Identity graph on 4 floats), median in ms."""
    import time

    import onnx.helper as oh

    graph = oh.make_graph([oh.make_node("Identity", ["x"], ["y"])], "identity",
                          [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])])
    seg = OnnxSegment(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]))
    x = torch.zeros(4)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        seg(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def _graph_nodes(graph: onnx.GraphProto) -> tuple[list[GraphNode], list[str], list[str], set[str]]:
    constants = {init.name for init in graph.initializer}
    nodes = []
    for i, node in enumerate(graph.node):
        if node.op_type == "Constant":
            constants.update(node.output)
            continue
        nodes.append(GraphNode(node.name or f"{node.op_type}_{i}", tuple(node.input), tuple(node.output)))
    inputs = [i.name for i in graph.input if i.name not in constants]
    return nodes, inputs, [o.name for o in graph.output], constants


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim]


def load_onnx(spec: str, path: Path) -> SegmentedModel:
    if not path.is_file():
        raise ModelSourceError(f"{path}: file not found", "check the path to the .onnx file")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ModelSourceError(f"{path}: not a valid ONNX model: {str(exc).splitlines()[0]}") from exc
    nodes, inputs, outputs, constants = _graph_nodes(proto.graph)
    cuts = find_cuts(nodes, inputs, outputs, constants)
    if not cuts:
        raise ModelSourceError(f"{path}: no cut point found in the graph", "the graph has no narrow place to split")
    # the extractor needs a value_info for every cut tensor: infer shapes first
    extractor = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(proto))
    segments: list[Segment] = []
    previous = inputs
    for cut in cuts + [None]:
        out_names = list(cut.crossing) if cut else outputs
        sub = extractor.extract_model(previous, out_names)
        segments.append(Segment(cut.after if cut else "output", OnnxSegment(sub)))
        if cut:
            previous = list(cut.crossing)
    graph_inputs = {i.name: i for i in proto.graph.input}

    def make_input(batch: int, seq_len: int | None) -> Any:
        rng = np.random.default_rng(0)
        arrays = []
        for name in inputs:
            info = graph_inputs[name]
            dims = _dims(info)
            shape = [batch if j == 0 and not isinstance(d, int) else (d if isinstance(d, int) and d > 0 else seq_len or 16)
                     for j, d in enumerate(dims)]
            dtype = _NP_TYPES.get(info.type.tensor_type.elem_type, np.float32)
            arr = rng.standard_normal(shape).astype(dtype) if dtype in (np.float32, np.float16) else \
                rng.integers(0, 100, shape).astype(dtype)
            arrays.append(torch.from_numpy(arr))
        return arrays[0] if len(arrays) == 1 else tuple(arrays)

    return SegmentedModel(spec=spec, name=path.stem, task="generic", segments=segments,
                          whole=OnnxSegment(proto), make_input=make_input,
                          extras={"onnx_path": str(path), "onnx_extractor": extractor,
                                  "onnx_inputs": inputs, "onnx_outputs": outputs})


def onnx_macs(proto: onnx.ModelProto, feeds: dict[str, tuple[int, ...]]) -> int:
    """Multiply-accumulates of Conv, MatMul and Gemm with shapes inferred for these input shapes."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    for inp in model.graph.input:
        if inp.name in feeds:
            for d, size in zip(inp.type.tensor_type.shape.dim, feeds[inp.name]):
                d.Clear()
                d.dim_value = size
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {v.name: _dims(v) for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    shapes.update({i.name: list(i.dims) for i in model.graph.initializer})
    total = 0
    for node in model.graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if not out or any(not isinstance(d, int) for d in out):
            continue
        if node.op_type == "Conv":
            w = shapes.get(node.input[1])
            if w and all(isinstance(d, int) for d in w):
                total += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("MatMul", "Gemm"):
            a = shapes.get(node.input[0])
            if a and isinstance(a[-1], int):
                trans_a = any(at.name == "transA" and at.i for at in node.attribute)
                k = a[-2] if trans_a else a[-1]
                total += int(np.prod(out)) * int(k)
    return total
