"""Whole-model ONNX exports through optimum (optimum-onnx), the field's exporter for transformers models.

Where aiflow exports a *whole* model (the speculative draft and target, the KV-cached graphs
``compress`` times decode on), optimum writes it: its ``text-generation-with-past`` graph is the
layout users of ``optimum.onnxruntime.ORTModelForCausalLM`` already know::

    input_ids, attention_mask, position_ids, past_key_values.N.key / .value
        -> logits, present.N.key / .value

Split halves and the bottleneck codec stay on aiflow's own exporter (``models.kv_onnx``,
``onnx_io``): a half needs a per-layer KV interface (layers 15-29 of a model, hidden states in)
that optimum's configs do not describe (docs/architecture.md, "Exporters").

The export runs from the in-memory transformers model (a GGUF-dequantised zoo model has no hub id),
offline, without optimum's validation pass (it loads the ONNX model beside the torch one: ~13.6 GB
for a 1.5B target); aiflow's own checks (``split verify``, compress's metrics) replace it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import onnx
import torch

from aiflow_cli.onnx_io import EXPORTER_KEY
from aiflow_cli.schemas.manifest import TensorDecl

__all__ = ["export_causal_lm_with_past", "graph_decls", "tensor_decl", "OPTIMUM_TASK", "optimum_label"]

OPTIMUM_TASK = "text-generation-with-past"


def optimum_label() -> str:
    """What ``aiflow.exporter`` records for an optimum graph: the package and its version."""
    from importlib.metadata import version

    return f"optimum-onnx {version('optimum-onnx')} ({OPTIMUM_TASK})"


def tensor_decl(value: onnx.ValueInfoProto) -> TensorDecl:
    """A graph value as the manifest declares it (named dynamic axes; ``dynamic`` where unnamed)."""
    t = value.type.tensor_type
    shape: list[int | str] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "dynamic")
                              for d in t.shape.dim]
    return TensorDecl(name=value.name, shape=shape, dtype=onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name)


def graph_decls(path: Path) -> tuple[list[TensorDecl], list[TensorDecl]]:
    """(inputs, outputs) as the graph at ``path`` declares them (weights not loaded)."""
    proto = onnx.load(str(path), load_external_data=False)
    weights = {t.name for t in proto.graph.initializer}
    return ([tensor_decl(v) for v in proto.graph.input if v.name not in weights],
            [tensor_decl(v) for v in proto.graph.output])


@torch.no_grad()
def export_causal_lm_with_past(hf_model: torch.nn.Module, folder: Path) -> Path:
    """``folder/model.onnx`` (weights over 2 GB in ``model.onnx_data``) written by optimum's
    ``onnx_export_from_model``; returns its path. The graph records the exporter in its metadata
    (``aiflow.exporter``), as aiflow's own exports do."""
    from optimum.exporters.onnx import onnx_export_from_model
    from transformers.utils import logging as hf_logging

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    quiet = logging.getLogger("optimum")
    level, hf_level = quiet.level, hf_logging.get_verbosity()
    quiet.setLevel(logging.ERROR)  # one INFO line per step otherwise
    # optimum re-loads the tokenizer to copy it beside the graph (unused here; the export ships its own),
    # and transformers then repeats a regex warning that is a false alarm for these models (docs/benchmarks.md)
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # TorchScript tracer warnings about Python control flow
            onnx_export_from_model(hf_model.eval(), folder, task=OPTIMUM_TASK, do_validation=False)
    finally:
        quiet.setLevel(level)
        hf_logging.set_verbosity(hf_level)
    path = folder / "model.onnx"
    proto = onnx.load(str(path), load_external_data=False)
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, EXPORTER_KEY: optimum_label()})
    onnx.save(proto, str(path))  # inline weights are in ``proto``; external ones stay where optimum put them
    return path
