"""``device.onnx`` cut into stages at its early exits, so that an input that exits stops computing.

A pair's ``device.onnx`` holds the exit heads as extra outputs (``exit_<cut>_logits``). Run whole,
it would compute everything before reading an exit. Here the graph is split (``onnx.utils.Extractor``)
at the tensor where each exit's head leaves the trunk::

    stage 0: inputs        -> tap_0, exit_0 logits
    stage 1: tap_0         -> tap_1, exit_1 logits
    ...
    last:    tap_k         -> the wire tensor(s)

The device runs a stage, reads its exit's confidence (max softmax) and answers when it passes
the manifest's threshold, sending nothing; otherwise it goes on. Chained stages compute what the
whole graph computes (the tests compare the two).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx.utils import Extractor

from aiflow_cli.ort import ort_session
from aiflow_cli.schemas.manifest import ExitDecl, ExportedPair

__all__ = ["Stage", "StagedDevice", "tap_of"]


@dataclass
class Stage:
    session: Any
    inputs: list[str]
    outputs: list[str]
    exit: ExitDecl | None  # the exit read after this stage (None: the last stage, which makes the wire)


def _ancestors(graph: onnx.GraphProto, outputs: list[str]) -> set[str]:
    producer = {o: n for n in graph.node for o in n.output}
    seen, stack = set(), list(outputs)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in producer:
            stack.extend(i for i in producer[name].input if i)
    return seen


def tap_of(graph: onnx.GraphProto, exit_output: str, trunk: set[str]) -> str:
    """The tensor where an exit's head leaves the trunk: walking back from the exit's output, the
    first tensor the wire also depends on."""
    producer = {o: n for n in graph.node for o in n.output}
    frontier, seen = [exit_output], set()
    while frontier:
        name = frontier.pop(0)
        if name in trunk:
            return name
        if name in seen or name not in producer:
            continue
        seen.add(name)
        frontier.extend(i for i in producer[name].input if i)
    raise ValueError(f"exit output {exit_output} does not branch off the trunk")


class StagedDevice:
    def __init__(self, root: Path, pair: ExportedPair, threads: int | None = None) -> None:
        model = onnx.shape_inference.infer_shapes(onnx.load(str(Path(root) / pair.device.file)))  # Extractor needs value_info
        wire = [d.name for d in pair.crossing]
        trunk = _ancestors(model.graph, wire)
        inits = {i.name for i in model.graph.initializer}
        inputs = [i.name for i in model.graph.input if i.name not in inits]
        taps = sorted(((tap_of(model.graph, e.output, trunk), e) for e in pair.exits),
                      key=lambda te: len(_ancestors(model.graph, [te[0]])))
        extractor = Extractor(model)
        self.stages: list[Stage] = []
        current = inputs
        for tap, decl in taps:
            outputs = [tap, decl.output]
            self.stages.append(Stage(ort_session(extractor.extract_model(current, outputs).SerializeToString(), threads),
                                     current, outputs, decl))
            current = [tap]
        self.stages.append(Stage(ort_session(extractor.extract_model(current, wire).SerializeToString(), threads),
                                 current, wire, None))

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray] | None, ExitDecl | None, np.ndarray | None]:
        """(wire tensors, None, None) when nothing exits; (None, the exit, its logits) when one does."""
        values = dict(feeds)
        for stage in self.stages:
            outs = stage.session.run(stage.outputs, {n: values[n] for n in stage.inputs})
            values.update(zip(stage.outputs, outs))
            if stage.exit is not None:
                logits = values[stage.exit.output]
                p = np.exp(logits - logits.max(-1, keepdims=True))
                if float((p.max(-1) / p.sum(-1)).min()) >= stage.exit.threshold:
                    return None, stage.exit, logits
        return [values[n] for n in self.stages[-1].outputs], None, None
