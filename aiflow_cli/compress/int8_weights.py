"""Int8 weights for a large language model, one tensor at a time.

Every MatMul whose weight is a 2-D float initializer (or the transpose of one: a tied LM head)
becomes onnxruntime's ``DynamicQuantizeMatMul`` (com.microsoft): int8 weights with one symmetric
scale per output column, activations quantised per pass at run time. The token embedding
(``Gather`` of a 2-D float initializer) is stored int8 with one scale per row and dequantised
after the lookup. That is ``onnxruntime.quantization.quantize_dynamic``'s kernel, with two
differences that are why this module exists:

- it streams: each weight is read (memory-mapped) from the fp32 model's external data and
  quantised on its own, so the peak is the int8 model plus one fp32 tensor (the 1.5B Qwen
  target: ~1.8 + 0.9 GB) instead of ~4x the fp32 model
  (``quantize_dynamic`` on the 0.5B peaked at 8.1 GB here; on the 1.5B it would pass 24 GB);
- the embedding is int8 too, which keeps the 1.5B under protobuf's 2 GB in one file.

Its cost grows slowly with the number of tokens in a pass (a k-token verification), which is what
a speculative target needs (docs/benchmarks.md, "verify(k)").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["quantize_int8_streaming"]

_MS = "com.microsoft"


def _array(tensor: onnx.TensorProto, base: Path) -> np.ndarray:
    """An initializer's values, memory-mapped when they live in external data."""
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return numpy_helper.to_array(tensor)
    info = {e.key: e.value for e in tensor.external_data}
    dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
    offset = int(info.get("offset", 0))
    return np.memmap(base / info["location"], dtype=dtype, mode="r", offset=offset, shape=tuple(tensor.dims))


def _per_column(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weight, float32 scale per column), symmetric: w ~ q * scale, |q| <= 127."""
    scale = np.abs(weight).max(axis=0).astype(np.float32) / 127.0
    scale[scale == 0] = 1.0
    q = np.empty(weight.shape, dtype=np.int8)
    step = max(1, (1 << 24) // max(1, weight.shape[1]))  # rows at a time: bounded temporaries
    for i in range(0, weight.shape[0], step):
        q[i:i + step] = np.clip(np.rint(np.asarray(weight[i:i + step], dtype=np.float32) / scale), -127, 127)
    return q, scale


def quantize_int8_streaming(src: Path, dst: Path, min_elements: int = 4096) -> dict[str, Any]:
    """``src`` (fp32, inline or external weights) -> ``dst`` (one file): int8 MatMul weights and
    embedding. Weights under ``min_elements`` stay float. Returns counts for the report."""
    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src), load_external_data=False)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    new_inits: dict[str, onnx.TensorProto] = {}
    nodes: list[onnx.NodeProto] = []
    counts = {"matmuls_int8": 0, "matmuls_float": 0, "embeddings_int8": 0}

    def weight_of(name: str) -> tuple[np.ndarray, str] | None:
        """(K x N weight, its source name) when ``name`` is a float 2-D initializer or Transpose of one."""
        if name in inits:
            t = inits[name]
            transpose = False
        elif name in producers and producers[name].op_type == "Transpose" and producers[name].input[0] in inits:
            t = inits[producers[name].input[0]]
            perm = [a.ints for a in producers[name].attribute if a.name == "perm"]
            if perm and list(perm[0]) != [1, 0]:
                return None
            transpose = True
        else:
            return None
        if t.data_type != onnx.TensorProto.FLOAT or len(t.dims) != 2 or t.dims[0] * t.dims[1] < min_elements:
            return None
        w = _array(t, src.parent)
        return (w.T if transpose else w), t.name

    for node in graph.node:
        if node.op_type == "MatMul" and node.domain in ("", "ai.onnx"):
            found = weight_of(node.input[1])
            if found is None:
                counts["matmuls_float"] += 1
                nodes.append(node)
                continue
            weight, source = found
            q, scale = _per_column(weight)
            base = f"{node.input[1]}_int8"
            new_inits[base] = numpy_helper.from_array(q, base)
            new_inits[base + "_scale"] = numpy_helper.from_array(scale, base + "_scale")
            new_inits[base + "_zero"] = numpy_helper.from_array(np.zeros(q.shape[1], np.int8), base + "_zero")
            nodes.append(helper.make_node("DynamicQuantizeMatMul", [node.input[0], base, base + "_scale", base + "_zero"],
                                          list(node.output), name=f"{node.name or base}_int8", domain=_MS))
            counts["matmuls_int8"] += 1
        elif node.op_type == "Gather" and node.input[0] in inits and len(inits[node.input[0]].dims) == 2 \
                and inits[node.input[0]].data_type == onnx.TensorProto.FLOAT \
                and all(a.i == 0 for a in node.attribute if a.name == "axis") \
                and inits[node.input[0]].dims[0] * inits[node.input[0]].dims[1] >= min_elements:
            table = _array(inits[node.input[0]], src.parent)
            q, scale = _per_column(np.asarray(table).T)  # per row of the table
            base = f"{node.input[0]}_int8"
            if base not in new_inits:
                new_inits[base] = numpy_helper.from_array(np.ascontiguousarray(q.T), base)
                new_inits[base + "_scale"] = numpy_helper.from_array(scale[:, None], base + "_scale")
            out = node.output[0]  # Gather's axis is 0 for a lookup table (checked above)
            nodes += [helper.make_node("Gather", [base, node.input[1]], [out + "_q"], name=f"{node.name}_q"),
                      helper.make_node("Gather", [base + "_scale", node.input[1]], [out + "_s"], name=f"{node.name}_s"),
                      helper.make_node("Cast", [out + "_q"], [out + "_f"], to=onnx.TensorProto.FLOAT),
                      helper.make_node("Mul", [out + "_f", out + "_s"], [out])]
            counts["embeddings_int8"] += 1
        else:
            for attr in node.attribute:  # a Constant's value may live in the data file too (optimum writes some there)
                if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_location == onnx.TensorProto.EXTERNAL:
                    attr.t.CopyFrom(numpy_helper.from_array(np.asarray(_array(attr.t, src.parent)), attr.t.name))
            nodes.append(node)
    # a Transpose whose only reader was a quantised MatMul (a tied head), and weights nothing reads any more
    read = {i for n in nodes for i in n.input} | {o.name for o in graph.output}
    nodes = [n for n in nodes if not (n.op_type == "Transpose" and n.output[0] not in read)]
    still_read = {i for n in nodes for i in n.input}
    kept = []
    for t in graph.initializer:
        if t.name not in still_read:
            continue
        if t.data_location == onnx.TensorProto.EXTERNAL:  # small constants may live in the data file too
            kept.append(numpy_helper.from_array(np.asarray(_array(t, src.parent)), t.name))
        else:
            kept.append(t)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + list(new_inits.values()))
    if not any(o.domain == _MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(_MS, 1))
    tmp = dst.with_name(dst.name + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(dst)
    counts["bytes"] = dst.stat().st_size
    return counts
