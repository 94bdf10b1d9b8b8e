"""A KServe ``InferenceService`` that serves the exported Triton repository on an existing cluster.

The ``kserve`` Python package's model classes pull in kubernetes, pandas and grpcio-tools, so the
manifest is plain YAML, checked at export time against the part of KServe's CRD schema it uses
(``schemas/kserve_inferenceservice.schema.json``). Upload ``DIR/triton`` to the storage the
``storageUri`` names and apply it; KServe's Triton runtime then scales the server halves. The
image must carry ``aiflow_cli`` for the decode step (Triton's Python backend imports it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from aiflow_cli.schemas.manifest import ExportedPair

__all__ = ["SCHEMA", "TRITON_RUNTIME", "inference_service", "write_inference_service"]

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "kserve_inferenceservice.schema.json"
TRITON_RUNTIME = "24.10-py3"  # NGC release of Triton 2.51, the server aiflow's Triton engine runs


def inference_service(model_name: str, pairs: list[ExportedPair], export_name: str) -> dict:
    name = re.sub(r"[^a-z0-9-]+", "-", f"{model_name}-{export_name}".lower()).strip("-")[:63].rstrip("-") or "aiflow"
    if not name[0].isalpha():
        name = f"m-{name}"[:63]
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "annotations": {
            "aiflow/models": ",".join(f"{model_name}-server-{p.cut}" for p in pairs if not p.kv_cache),
            "aiflow/note": "upload DIR/triton to storageUri; the image needs aiflow_cli (pip install aiflow-cli) "
                           "for the decode steps"}},
        "spec": {"predictor": {"minReplicas": 1, "triton": {
            "storageUri": f"pvc://aiflow-exports/{export_name}/triton",
            "runtimeVersion": TRITON_RUNTIME,
            "protocolVersion": "v2",
            "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
            "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
        }}},
    }


def write_inference_service(root: Path, model_name: str, pairs: list[ExportedPair], export_name: str) -> Path:
    """Write ``root/kserve/inferenceservice.yaml`` after checking it against the schema."""
    import jsonschema

    doc = inference_service(model_name, pairs, export_name)
    jsonschema.validate(doc, json.loads(SCHEMA.read_text(encoding="utf-8")))
    path = Path(root) / "kserve" / "inferenceservice.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# KServe InferenceService for the server halves (aiflow split --export)\n"
                    + yaml.safe_dump(doc, sort_keys=False))
    return path
