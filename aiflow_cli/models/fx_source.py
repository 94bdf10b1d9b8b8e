"""Arbitrary torch modules (``py:module:function``): cut points from the traced graph.

``function()`` returns ``(module, example_input)``. The module is traced with ``torch.fx``; cut
points come from :func:`find_cuts`, and each segment becomes its own ``GraphModule`` whose input
is the value(s) crossing the previous cut.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import fx, nn

from aiflow_cli.errors import ModelSourceError
from aiflow_cli.models.graph_cuts import GraphCut, GraphNode, find_cuts
from aiflow_cli.models.segmented import Segment, SegmentedModel

__all__ = ["load_py", "segment_fx_module"]


def _graph_nodes(gm: fx.GraphModule) -> tuple[list[GraphNode], list[str], list[str], set[str]]:
    nodes, inputs, outputs, constants = [], [], [], set()
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            inputs.append(n.name)
        elif n.op == "get_attr":
            constants.add(n.name)
        elif n.op == "output":
            outputs = [a.name for a in n.all_input_nodes]
        else:
            nodes.append(GraphNode(n.name, tuple(a.name for a in n.all_input_nodes), (n.name,)))
    return nodes, inputs, outputs, constants


def _subgraph(gm: fx.GraphModule, in_names: list[str], out_names: list[str], keep: set[str]) -> fx.GraphModule:
    """A GraphModule taking ``in_names`` (one value, or a tuple) and returning ``out_names``."""
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    packed = graph.placeholder("x")
    for i, name in enumerate(in_names):
        env[name] = packed if len(in_names) == 1 else graph.call_function(_item, (packed, i))
    for n in gm.graph.nodes:
        if n.name in keep or (n.op == "get_attr" and n.name not in env):
            if n.op == "get_attr" or n.name in keep:
                env[n.name] = graph.node_copy(n, lambda a: env[a.name])
    outs = [env[name] for name in out_names]
    graph.output(outs[0] if len(outs) == 1 else tuple(outs))
    return fx.GraphModule(gm, graph)


def _item(x: Any, i: int) -> Any:
    return x[i]


def segment_fx_module(module: nn.Module, name: str = "module") -> tuple[list[Segment], list[GraphCut]]:
    try:
        gm = fx.symbolic_trace(module)
    except Exception as exc:  # tracing fails on data-dependent control flow
        raise ModelSourceError(f"{name}: torch.fx cannot trace this module: {str(exc).splitlines()[0]}",
                               "export it to ONNX and pass the .onnx file instead") from exc
    nodes, inputs, outputs, constants = _graph_nodes(gm)
    if len(inputs) != 1:
        raise ModelSourceError(f"{name}: the module takes {len(inputs)} inputs; py: sources take one tensor",
                               "wrap it in a module whose forward takes one tensor")
    cuts = find_cuts(nodes, inputs, outputs, constants)
    if not cuts:
        raise ModelSourceError(f"{name}: no cut point found in the traced graph", "the graph has no narrow place to split")
    segments: list[Segment] = []
    previous_in, previous_prefix = inputs, 0
    for cut in cuts + [None]:
        prefix = cut.prefix if cut else (1 << len(nodes)) - 1
        keep = {nodes[i].name for i in range(len(nodes)) if (prefix & ~previous_prefix) >> i & 1}
        out_names = list(cut.crossing) if cut else outputs
        seg_name = cut.after if cut else "output"
        segments.append(Segment(seg_name, _subgraph(gm, previous_in, out_names, keep)))
        if cut:
            previous_in, previous_prefix = list(cut.crossing), cut.prefix
    return segments, cuts


def load_py(spec: str, target: str) -> SegmentedModel:
    module_name, _, func_name = target.partition(":")
    if not module_name or not func_name:
        raise ModelSourceError(f"'{spec}' is not of the form py:module:function", "e.g. py:mypkg.models:build")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise ModelSourceError(f"{spec}: cannot import {func_name} from {module_name}: {exc}",
                               "check the module is on PYTHONPATH") from exc
    result = func()
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], nn.Module)):
        raise ModelSourceError(f"{spec}: {func_name}() must return (torch module, example input)")
    module, example = result
    module.eval()
    segments, _ = segment_fx_module(module, spec)

    def make_input(batch: int, _seq: int | None) -> torch.Tensor:
        return example if batch == example.shape[0] else example[:1].expand(batch, *example.shape[1:]).contiguous()

    return SegmentedModel(spec=spec, name=func_name, task="generic", segments=segments, whole=module,
                          make_input=make_input)
