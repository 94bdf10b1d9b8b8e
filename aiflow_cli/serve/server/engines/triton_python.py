"""Triton Python-backend model for an exported pair's decode step (and, where Triton has no ONNX
Runtime backend, its network step).

Runs inside Triton's Python backend stub, which provides ``triton_python_backend_utils``. The
model's ``aiflow_role`` parameter names its role (``decode`` or ``network``); the decode step
reads the pair's manifest entry from ``pair.json`` beside it, the network step the
``model.onnx`` beside it. The decode step reuses aiflow's own framing
and codecs, so both engines decode the same bytes the same way; a malformed request becomes a
``TritonError`` (Triton answers it with a 400) and the model keeps serving.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TritonPythonModel"]


class TritonPythonModel:  # the name and methods Triton's Python backend looks for
    def initialize(self, args: dict[str, Any]) -> None:
        from aiflow_cli.codecs.registry import crossing_codecs
        from aiflow_cli.ort import ort_session
        from aiflow_cli.schemas.manifest import ExportedPair
        from aiflow_cli.serve.protocol import MAX_BATCH

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = Path(args["model_repository"]) / str(args.get("model_version", "1"))  # this model's version folder
        self.role = params["aiflow_role"]
        self.max_batch = int(params.get("aiflow_max_batch", MAX_BATCH))
        self.pair = ExportedPair.model_validate_json((here / "pair.json").read_text())
        if self.role == "decode":
            self.codecs = crossing_codecs(self.pair)
        else:
            self.session = ort_session(here / "model.onnx", 1)

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            try:
                outputs = self._decode(request, pb_utils) if self.role == "decode" else self._network(request, pb_utils)
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            except Exception as exc:  # noqa: BLE001 - one bad request must not stop the model
                from aiflow_cli.errors import AiflowError

                bad_input = isinstance(exc, AiflowError)
                message = exc.one_line() if bad_input else str(exc)
                code = getattr(pb_utils.TritonError, "INVALID_ARG", None) if bad_input else None
                error = pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
        return responses

    def _decode(self, request: Any, pb_utils: Any) -> list[Any]:
        from aiflow_cli.export.triton import DECODED_SUFFIX
        from aiflow_cli.serve.server.halves import decode_wire

        out = []
        for decl, codec in zip(self.pair.crossing, self.codecs):
            data = _as_numpy(pb_utils.get_input_tensor_by_name(request, decl.name))
            out.append(_tensor(pb_utils, decl.name + DECODED_SUFFIX, decode_wire(codec, data, decl, self.max_batch)))
        return out

    def _network(self, request: Any, pb_utils: Any) -> list[Any]:
        feeds = {d.name: _as_numpy(pb_utils.get_input_tensor_by_name(request, d.name)) for d in self.pair.server.inputs}
        outs = self.session.run(None, feeds)
        return [_tensor(pb_utils, d.name, np.asarray(o)) for d, o in zip(self.pair.server.outputs, outs)]

    def finalize(self) -> None:
        return None


# The backend stub's own numpy bridge (``as_numpy``, ``Tensor(name, array)``) was compiled against
# numpy 1.x and misreads numpy 2 arrays (every element read as the first byte). Tensors cross
# through DLPack instead, which carries its own layout description.
def _as_numpy(tensor: Any) -> np.ndarray:
    import torch

    return torch.utils.dlpack.from_dlpack(tensor.to_dlpack()).numpy()


def _tensor(pb_utils: Any, name: str, array: np.ndarray) -> Any:
    import torch

    return pb_utils.Tensor.from_dlpack(name, torch.from_numpy(np.ascontiguousarray(array)))
