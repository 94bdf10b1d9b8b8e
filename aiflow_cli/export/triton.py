"""A Triton Inference Server model repository for the server halves.

One model per exported cut: ``triton/<model>-server-<cut>/config.pbtxt`` and ``1/model.onnx``
(a copy of server.onnx, same sha256). Inputs and outputs come from the manifest's declarations;
a leading ``batch`` axis becomes Triton's implicit batch dimension, other dynamic axes are -1.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from aiflow_cli.schemas.manifest import ExportedPair, TensorDecl

__all__ = ["TRITON_DTYPES", "write_triton_model", "triton_model_name", "config_pbtxt"]

TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8", "int8": "TYPE_INT8",
                 "int64": "TYPE_INT64", "int32": "TYPE_INT32", "bool": "TYPE_BOOL"}
MAX_BATCH = 64


def triton_model_name(model_name: str, cut: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", f"{model_name}-server-{cut}")


def _tensor(decl: TensorDecl, batched: bool) -> str:
    dims = decl.shape[1:] if batched else decl.shape
    dims_text = ", ".join(str(d) if isinstance(d, int) else "-1" for d in dims)
    return f'  {{\n    name: "{decl.name}"\n    data_type: {TRITON_DTYPES[decl.dtype]}\n    dims: [ {dims_text} ]\n  }}'


def config_pbtxt(name: str, pair: ExportedPair) -> str:
    decls = pair.server.inputs + pair.server.outputs
    batched = all(d.shape and d.shape[0] == "batch" for d in decls)
    lines = [f'name: "{name}"', 'platform: "onnxruntime_onnx"', f"max_batch_size: {MAX_BATCH if batched else 0}",
             "input [", ",\n".join(_tensor(d, batched) for d in pair.server.inputs), "]",
             "output [", ",\n".join(_tensor(d, batched) for d in pair.server.outputs), "]",
             "instance_group [ { kind: KIND_CPU } ]"]
    if batched:
        lines.append("dynamic_batching { }")
    return "\n".join(lines) + "\n"


def write_triton_model(root: Path, model_name: str, pair: ExportedPair) -> Path:
    name = triton_model_name(model_name, pair.cut)
    folder = Path(root) / "triton" / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(root) / pair.server.file, folder / "1" / "model.onnx")
    (folder / "config.pbtxt").write_text(config_pbtxt(name, pair))
    return folder
