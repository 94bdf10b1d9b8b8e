"""``manifest.json``: the contract between device and server for an exported split.

Names, shapes (with named dynamic axes), dtypes, codec parameters and the sha256 of every
artifact. Both sides refuse a manifest that does not match what they hold. The JSON Schema
shipped beside this module (``manifest.schema.json``) is generated from these models and a
test keeps the two identical.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from aiflow_cli.schemas.base import Strict

from aiflow_cli.errors import ConfigError

__all__ = ["MANIFEST_SCHEMA_VERSION", "TensorDecl", "Artifact", "CodecInfo", "Verification", "ExportedPair",
           "Manifest", "SCHEMA_FILE", "load_manifest", "manifest_json_schema"]

MANIFEST_SCHEMA_VERSION = "aiflow.manifest/1"
SCHEMA_FILE = Path(__file__).with_name("manifest.schema.json")


class TensorDecl(Strict):
    """One tensor at a boundary. Dynamic axes are named strings (``batch``, ``sequence``)."""

    name: str
    shape: list[int | str]
    dtype: str


class Artifact(Strict):
    file: str = Field(description="path relative to the export directory")
    sha256: str
    size_bytes: int
    inputs: list[TensorDecl]
    outputs: list[TensorDecl]


class CodecInfo(Strict):
    name: str
    params: dict[str, Any]


class Verification(Strict):
    inputs: str = Field(description="what the pair was checked on")
    count: int
    max_abs_diff: float
    output_scale: float
    agreement: float | None = Field(default=None, description="top-1 / token agreement with the unsplit model")
    mean_cosine: float | None = None
    passed: bool


class ExitDecl(Strict):
    """An early-exit head inside ``device.onnx``: the device answers on its own when the exit is confident."""

    cut: str = Field(description="the cut whose activation the head reads (at or before the pair's cut)")
    output: str = Field(description="device.onnx output holding the head's logits")
    confidence: Literal["max-softmax"] = "max-softmax"
    threshold: float = Field(description="answer on the device when max softmax >= threshold; else send the wire")
    exit_rate: float = Field(description="share of evaluation inputs that exit here")
    drop: float = Field(description="top-1 points lost on the evaluation split with this exit in front")


class ExportedPair(Strict):
    cut: str
    cut_index: int
    directory: str
    codec: CodecInfo
    device: Artifact
    server: Artifact
    crossing: list[TensorDecl] = Field(description="what goes on the wire (codec output), device -> server")
    kv_cache: bool = False
    predicted_latency_ms: dict[str, float] = Field(default_factory=dict, description="link name -> total ms")
    bytes_per_request: int | None = None
    exits: list[ExitDecl] = Field(default_factory=list, description="early-exit heads in device.onnx")
    verification: Verification


class Manifest(Strict):
    schema_version: Literal["aiflow.manifest/1"] = MANIFEST_SCHEMA_VERSION
    aiflow_version: str
    source_model: dict[str, str] = Field(description="spec, name, task, fingerprint")
    opset: int
    pairs: list[ExportedPair]
    plan_table: list[dict[str, Any]] = Field(default_factory=list)


def manifest_json_schema() -> dict[str, Any]:
    return Manifest.model_json_schema()


def load_manifest(directory: Path) -> Manifest:
    """Read and validate DIR/manifest.json against the shipped JSON Schema."""
    import jsonschema

    path = Path(directory) / "manifest.json"
    if not path.is_file():
        raise ConfigError(f"{path}: not found", "pass a folder written by aiflow split --export")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: malformed JSON at line {exc.lineno}") from exc
    schema = json.loads(SCHEMA_FILE.read_text())
    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ConfigError(f"{path}: field '{where}': {exc.message}", "re-export with aiflow split --export") from exc
    return Manifest.model_validate(data)
