"""A Triton Inference Server model repository for the server halves, from Triton's own ModelConfig protobuf.

For each exported pair, three models, so that Triton's own ONNX Runtime backend runs the network::

    <name>          ensemble: what a device calls (the same name as on aiflow's embedded server)
      step 1  <name>-decode   python backend: framed codec bytes (UINT8) -> the wire tensors
      step 2  <name>-onnx     onnxruntime_onnx: server.onnx (a copy, same sha256)

The repository is self-contained: the decode step reads ``1/pair.json`` (the pair's manifest
entry: codec parameters and tensor declarations) and imports ``aiflow_cli`` (install it into
Triton's Python environment); the network step holds ``1/model.onnx``. Configs are built as
``ModelConfig`` messages (``tritonclient.grpc.model_config_pb2``) and written with protobuf's
``text_format``; every dynamic axis is ``-1`` and batching is left to the requests
(``max_batch_size: 0``). Causal-LM pairs keep a KV cache per session and are served by aiflow's
embedded engine only.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from aiflow_cli.schemas.manifest import ExportedPair, TensorDecl

__all__ = ["TRITON_DTYPES", "triton_model_name", "pair_configs", "write_triton_pair", "DECODED_SUFFIX"]

TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8", "int8": "TYPE_INT8",
                 "int64": "TYPE_INT64", "int32": "TYPE_INT32", "bool": "TYPE_BOOL"}
DECODED_SUFFIX = "__decoded"
MODEL_PY = '''"""aiflow decode / network step for Triton's Python backend (needs aiflow_cli installed)."""
import sys
from pathlib import Path

_paths = Path(__file__).with_name("aiflow_paths.txt")  # runtime repositories: where aiflow lives
if _paths.is_file():
    sys.path[:0] = [p for p in _paths.read_text().splitlines() if p and p not in sys.path]

from aiflow_cli.serve.server.engines.triton_python import TritonPythonModel  # noqa: E402,F401
'''


def triton_model_name(model_name: str, cut: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", f"{model_name}-server-{cut}")


def _tensor(config_list, decl: TensorDecl, name: str | None = None, dtype: str | None = None):  # noqa: ANN001, ANN202
    from tritonclient.grpc import model_config_pb2 as mc

    item = config_list.add()
    item.name = name or decl.name
    item.data_type = mc.DataType.Value(TRITON_DTYPES[dtype or decl.dtype])
    item.dims.extend([d if isinstance(d, int) else -1 for d in decl.shape] if dtype is None else [-1])
    return item


def pair_configs(name: str, pair: ExportedPair, network_backend: str = "onnxruntime",
                 max_batch: int | None = None) -> dict[str, object]:
    """{model name: ModelConfig} for the ensemble, its decode step and its network step.

    ``network_backend`` "python" runs server.onnx with onnxruntime inside Triton's Python backend,
    for Triton builds without the ONNX Runtime backend (the ``nvidia-pytriton`` wheel ships only
    the Python backend).
    """
    from tritonclient.grpc import model_config_pb2 as mc

    decode, network = f"{name}-decode", f"{name}-onnx"
    configs: dict[str, object] = {}

    step = mc.ModelConfig(name=decode, backend="python", max_batch_size=0)
    for d in pair.crossing:
        _tensor(step.input, d, dtype="uint8")
        _tensor(step.output, d, name=d.name + DECODED_SUFFIX)
    step.parameters["aiflow_role"].string_value = "decode"
    if max_batch is not None:  # the decode step refuses a larger declared batch before decoding it
        step.parameters["aiflow_max_batch"].string_value = str(max_batch)
    configs[decode] = step

    net = mc.ModelConfig(name=network, max_batch_size=0)
    if network_backend == "python":
        net.backend = "python"
        net.parameters["aiflow_role"].string_value = "network"
    else:
        net.platform = "onnxruntime_onnx"
    for d in pair.server.inputs:
        _tensor(net.input, d)
    for d in pair.server.outputs:
        _tensor(net.output, d)
    configs[network] = net

    ens = mc.ModelConfig(name=name, platform="ensemble", max_batch_size=0)
    for d in pair.crossing:
        _tensor(ens.input, d, dtype="uint8")
    for d in pair.server.outputs:
        _tensor(ens.output, d)
    first = ens.ensemble_scheduling.step.add(model_name=decode, model_version=-1)
    second = ens.ensemble_scheduling.step.add(model_name=network, model_version=-1)
    for d in pair.crossing:
        first.input_map[d.name] = d.name
        first.output_map[d.name + DECODED_SUFFIX] = d.name + DECODED_SUFFIX
        second.input_map[d.name] = d.name + DECODED_SUFFIX
    for d in pair.server.outputs:
        second.output_map[d.name] = d.name
    configs[name] = ens

    for config in configs.values():
        if getattr(config, "backend", "") == "python" or config.platform == "onnxruntime_onnx":
            config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    return configs


def write_triton_pair(root: Path, model_name: str, pair: ExportedPair, network_backend: str = "onnxruntime",
                      server_onnx: Path | None = None, python_paths: list[str] | None = None,
                      max_batch: int | None = None) -> list[Path]:
    """Write the three models of ``pair`` under ``root/triton``; returns their folders.

    ``python_paths`` (runtime repositories): folders the Python-backend models put on ``sys.path``
    before importing aiflow (the backend stub ignores ``PYTHONPATH``)."""
    from google.protobuf import text_format

    name = triton_model_name(model_name, pair.cut)
    folders = []
    for model, config in pair_configs(name, pair, network_backend, max_batch).items():
        folder = Path(root) / "triton" / model
        (folder / "1").mkdir(parents=True, exist_ok=True)
        (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
        if getattr(config, "backend", "") == "python":
            (folder / "1" / "model.py").write_text(MODEL_PY)
            (folder / "1" / "pair.json").write_text(pair.model_dump_json(indent=1))
            if python_paths:
                (folder / "1" / "aiflow_paths.txt").write_text("\n".join(python_paths) + "\n")
        if model.endswith("-onnx"):  # the network step holds the network, whichever backend runs it
            shutil.copyfile(server_onnx or Path(root) / pair.server.file, folder / "1" / "model.onnx")
        folders.append(folder)
    return folders
