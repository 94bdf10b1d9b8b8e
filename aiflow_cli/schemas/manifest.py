"""``manifest.json``: the contract between device and server for an exported split.

Names, shapes (with named dynamic axes), dtypes, codec parameters and the sha256 of every
artifact. Both sides refuse a manifest that does not match what they hold
(:mod:`aiflow_cli.export.check` checks every declaration against the files). The JSON Schema
shipped beside this module (``manifest.schema.json``) is generated from these models and a
test keeps the two identical. Every path in it is relative to the export directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from aiflow_cli.errors import ConfigError
from aiflow_cli.schemas.base import Strict
from aiflow_cli.schemas.loading import check_schema_version, read_mapping

__all__ = ["MANIFEST_SCHEMA_VERSION", "TensorDecl", "Artifact", "CodecInfo", "Verification", "ExitDecl", "ExportedPair",
           "SourceModel", "PairCost", "SpeculativeInfo", "Manifest", "SCHEMA_FILE", "load_manifest", "manifest_json_schema"]

MANIFEST_SCHEMA_VERSION = "aiflow.manifest/2"
SCHEMA_FILE = Path(__file__).with_name("manifest.schema.json")


class TensorDecl(Strict):
    """One tensor at a boundary. Dynamic axes are named strings (``batch``, ``sequence``)."""

    name: str
    shape: list[int | str]
    dtype: str


class Artifact(Strict):
    file: str = Field(description="path relative to the export directory")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)
    inputs: list[TensorDecl]
    outputs: list[TensorDecl]
    exporter: str | None = Field(None, description="which exporter wrote the graph: 'dynamo', or 'torchscript' "
                                 "with the reason the dynamo exporter was not used; null for a graph cut from an "
                                 "ONNX source")


class CodecInfo(Strict):
    name: str
    params: dict[str, Any]


class Verification(Strict):
    reference: str = Field(description="what the pair was compared against: the unsplit model, or (learned "
                                       "bottlenecks) the training graph")
    inputs: str = Field(description="what the pair was checked on (real data, or synthetic inputs and why)")
    count: int = Field(ge=1)
    max_abs_diff: float
    output_scale: float
    agreement: float | None = Field(default=None, description="top-1 / token agreement with the unsplit model")
    mean_cosine: float | None = None
    flips: int | None = Field(default=None, description="speculative exports with int8-compute weights (int4): prompts "
                                                        "whose speculative output left the target's own at a near-tie "
                                                        "(counted, not refused)")
    passed: bool


class ExitDecl(Strict):
    """An early-exit head inside ``device.onnx``: the device answers on its own when the exit is confident."""

    cut: str = Field(description="the cut whose activation the head reads (at or before the pair's cut)")
    output: str = Field(description="device.onnx output holding the head's logits")
    confidence: Literal["max-softmax"] = "max-softmax"
    threshold: float = Field(description="answer on the device when max softmax >= threshold; else send the wire")
    exit_rate: float = Field(description="share of evaluation inputs that exit here")
    drop: float = Field(description="top-1 points lost on the evaluation split with this exit in front")


class PairCost(Strict):
    """The link-independent part of the plan's cost model for this cut: with a link's rates and RTT
    it predicts a request's latency component by component (``split.cost.predict``)."""

    device_ms: float = Field(ge=0, description="device segments up to the cut, one call")
    encode_ms: float = Field(ge=0)
    bytes: int = Field(ge=0, description="codec bytes sent per request")
    server_ms: float = Field(ge=0, description="server segments after the cut, one call")
    decode_ms: float = Field(ge=0)
    result_bytes: int = Field(ge=0, description="bytes of the answer")
    device_source: str = Field(description="measured (a profile of that machine) or projected")
    server_source: str
    device_runtime: str = Field("unknown", description="the runtime the device prediction is for (onnxruntime, "
                                                       "torch, a hardware profile's runtime)")
    server_runtime: str = Field("unknown", description="the runtime the server prediction is for")


class ExportedPair(Strict):
    cut: str
    cut_index: int = Field(ge=0)
    directory: str = Field(description="the pair's folder, relative to the export directory")
    codec: CodecInfo
    device: Artifact
    server: Artifact
    crossing: list[TensorDecl] = Field(description="what goes on the wire (codec output), device -> server")
    kv_cache: bool = False
    predicted_latency_ms: dict[str, float] = Field(default_factory=dict, description="link name -> total ms")
    cost: PairCost | None = Field(default=None, description="the plan's cost model for this cut, without a link")
    bytes_per_request: int | None = None
    exits: list[ExitDecl] = Field(default_factory=list, description="early-exit heads in device.onnx")
    verification: Verification


class SourceModel(Strict):
    spec: str = Field(description="the --model value the pairs were cut from")
    name: str
    task: str
    fingerprint: str = Field(description="sha256 over the weights")
    weights: str = Field(default="", description="what the weights are, where that matters (a dequantised GGUF is "
                                                 "not an fp32 original)")


class SpeculativeInfo(Strict):
    """A speculative-decoding export: the draft runs on the device (``device``), the target on the
    server (``server``); token ids cross the link, never activations."""

    draft_model: SourceModel
    vocab_size: int = Field(gt=0)
    tokenizer_sha256: str = Field(pattern="^[0-9a-f]{64}$", description="sha256 over the (shared) token -> id map")
    max_positions: int = Field(gt=0, description="the target's context length: prompt + new tokens must fit")
    eos_ids: list[int] = Field(default_factory=list)


class Manifest(Strict):
    schema_version: Literal["aiflow.manifest/2"] = MANIFEST_SCHEMA_VERSION
    aiflow_version: str
    source_model: SourceModel
    opset: int
    pairs: list[ExportedPair] = Field(min_length=1)
    plan_table: list[dict[str, Any]] = Field(default_factory=list)
    speculative: SpeculativeInfo | None = Field(default=None, description="set for a draft/target export")

    @model_validator(mode="after")
    def _pairs_are_distinct(self) -> "Manifest":
        for field in ("cut", "directory"):
            values = [getattr(p, field) for p in self.pairs]
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise ValueError(f"pairs: {field} '{twice[0]}' is listed more than once")
        return self


def manifest_json_schema() -> dict[str, Any]:
    return Manifest.model_json_schema()


def load_manifest(directory: Path) -> Manifest:
    """Read DIR/manifest.json and validate it against the shipped JSON Schema; one line per failure."""
    import jsonschema

    path = Path(directory) / "manifest.json"
    if not Path(directory).is_dir():
        raise ConfigError(f"{directory}: not a directory", "pass a folder written by aiflow split --export")
    data = read_mapping(path, "manifest")
    check_schema_version(path, data, MANIFEST_SCHEMA_VERSION, hint="re-export with this version of aiflow split --export")
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        what = error.message if len(error.message) <= 160 else f"fails the schema's '{error.validator}' rule"
        raise ConfigError(f"{path}: field '{where}': {what}", "re-export with aiflow split --export")
    from pydantic import ValidationError

    from aiflow_cli.schemas.loading import describe_validation_error

    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:  # what JSON Schema cannot say (non-finite numbers)
        raise ConfigError(describe_validation_error(path, exc), "re-export with aiflow split --export") from None
