"""Compression recipes: an ordered list of stages, validated before any work starts.

Each stage is a pydantic model with ``extra="forbid"``, so a typo fails at load time with the
file, the stage (index and kind) and the field named. YAML is data: ``yaml.safe_load`` only, and
stage kinds resolve against :data:`STAGES`, never against importable code.

::

    name: efficientnet-lite0-int8-static
    model: zoo:efficientnet-lite0        # default --model
    stages:
      - kind: quantize
        method: static
        calibration_samples: 64
      - kind: evaluate
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aiflow_cli.errors import ConfigError
from aiflow_cli.schemas.loading import (
    check_finite,
    check_schema_version,
    describe_validation_error,
    read_mapping,
)

__all__ = ["RECIPE_SCHEMA_VERSION", "PruneMagnitude", "PruneChannels", "PruneDepth", "QuantizeDynamic",
           "QuantizeStatic", "QuantizeInt4", "Distill", "Evaluate", "Stage", "Recipe", "STAGES", "load_recipe",
           "TORCH_STAGES", "ONNX_STAGES"]

RECIPE_SCHEMA_VERSION = "aiflow.recipe/1"


class _Stage(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PruneMagnitude(_Stage):
    """Unstructured magnitude pruning of every conv / linear weight (torch.nn.utils.prune)."""

    kind: Literal["prune"]
    method: Literal["magnitude"]
    sparsity: float = Field(ge=0, lt=1)


class PruneChannels(_Stage):
    """Structured pruning of channels / MLP width / attention heads with dependency handling (torch-pruning)."""

    kind: Literal["prune"]
    method: Literal["channels"]
    sparsity: float = Field(ge=0, lt=1, description="fraction of channels removed in each prunable layer")
    importance: Literal["magnitude"] = "magnitude"
    round_to: int = Field(default=8, ge=1, le=1024, description="keep channel counts multiples of this")


class PruneDepth(_Stage):
    """Drop whole transformer layers whose removal changes hidden states least (block influence)."""

    kind: Literal["prune"]
    method: Literal["depth"]
    keep_fraction: float = Field(gt=0, le=1)
    calibration_samples: int = Field(default=32, ge=1, le=10_000)
    calibration_tokens: int = Field(default=128, ge=8, le=8192)


class QuantizeDynamic(_Stage):
    """Dynamic int8 (weights int8 offline, activations quantised at run time) through optimum:
    ``ORTOptimizer`` fusions at ``optimization`` (applied to the fp32 baseline too, so the ratio
    measures quantisation alone), then ``ORTQuantizer`` with ``AutoQuantizationConfig.<quantization>``."""

    kind: Literal["quantize"]
    method: Literal["dynamic"]
    per_channel: bool = True
    optimization: Literal["none", "O1", "O2", "O3"] = Field(
        default="O2", description="optimum AutoOptimizationConfig level for transformer models (none: no fusions)")
    optimization_options: dict[str, bool] = Field(
        default_factory=dict, description="OptimizationConfig fields to override, e.g. "
                                          "disable_embed_layer_norm_fusion: false")
    quantization: Literal["avx512_vnni", "avx512", "avx2", "arm64"] | None = Field(
        default=None, description="optimum AutoQuantizationConfig; default: this CPU's (avx512_vnni, avx512, avx2 "
                                  "or arm64)")
    optimize: bool | None = Field(default=None, exclude=True, description="older spelling: true = optimization O2, false = none")

    @model_validator(mode="after")
    def _older_spelling(self) -> "QuantizeDynamic":
        if self.optimize is not None:
            if "optimization" in self.model_fields_set:
                raise ValueError("give 'optimization' (O1-O3 or none) or the older 'optimize', not both")
            self.optimization = "O2" if self.optimize else "none"
            self.optimize = None
        from optimum.onnxruntime.configuration import OptimizationConfig

        unknown = sorted(set(self.optimization_options) - set(OptimizationConfig.__dataclass_fields__))
        if unknown:
            raise ValueError(f"optimization_options: unknown OptimizationConfig field(s) {', '.join(unknown)}")
        return self


class QuantizeStatic(_Stage):
    """onnxruntime static int8 (QDQ) with activation ranges calibrated on training data."""

    kind: Literal["quantize"]
    method: Literal["static"]
    calibration_samples: int = Field(default=64, ge=1, le=10_000)
    per_channel: bool = True
    calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"


class QuantizeInt4(_Stage):
    """4-bit weight-only quantisation of MatMul weights (onnxruntime MatMulNBits).

    ``rtn``: round-to-nearest per block (``symmetric``, ``accuracy_level`` apply). ``hqq``:
    half-quadratic quantisation (Badri & Shaji 2023), which optimises each block's scale and zero
    point; calibration-free and markedly more accurate at the same size.
    """

    kind: Literal["quantize"]
    method: Literal["int4"]
    algorithm: Literal["rtn", "hqq"] = "rtn"
    block_size: Literal[16, 32, 64, 128, 256, 512, 1024, 2048, 4096] = Field(
        default=32, description="weights per quantisation block: a power of two, 16 to 4096 (MatMulNBits)")
    symmetric: bool = True
    accuracy_level: int = Field(default=4, ge=0, le=4)


class Distill(_Stage):
    """Knowledge distillation: teacher = the model before compression, student = the compressed one."""

    kind: Literal["distill"]
    steps: int = Field(ge=1, le=1_000_000)
    batch_size: int = Field(default=8, ge=1, le=1024)
    learning_rate: float = Field(default=1e-4, gt=0, le=1.0)
    weight_decay: float = Field(default=0.01, ge=0, le=1.0)
    temperature: float = Field(default=2.0, gt=0, le=100.0)
    hidden_mse_weight: float = Field(default=0.0, ge=0, le=1e6, description="weight of hidden-state MSE on mapped layers")
    seq_len: int = Field(default=128, ge=8, le=8192, description="text: tokens per training sequence")
    data: str | None = Field(default=None, description="image folder or text file; default: the training split")


class Evaluate(_Stage):
    """Measure size, parameters, onnxruntime latency and the task metric."""

    kind: Literal["evaluate"]
    latency_repeats: int = Field(default=20, ge=1, le=10_000)
    eval_samples: int | None = Field(default=None, ge=1, le=1_000_000, description="images / sentences / tokens to evaluate on")


Stage = Union[PruneMagnitude, PruneChannels, PruneDepth, QuantizeDynamic, QuantizeStatic, QuantizeInt4, Distill,
              Evaluate]

STAGES: dict[tuple[str, str | None], type[_Stage]] = {
    ("prune", "magnitude"): PruneMagnitude,
    ("prune", "channels"): PruneChannels,
    ("prune", "depth"): PruneDepth,
    ("quantize", "dynamic"): QuantizeDynamic,
    ("quantize", "static"): QuantizeStatic,
    ("quantize", "int4"): QuantizeInt4,
    ("distill", None): Distill,
    ("evaluate", None): Evaluate,
}
TORCH_STAGES = (PruneMagnitude, PruneChannels, PruneDepth, Distill)
ONNX_STAGES = (QuantizeDynamic, QuantizeStatic, QuantizeInt4)


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    schema_version: Literal["aiflow.recipe/1"] = RECIPE_SCHEMA_VERSION
    name: str
    description: str = ""
    model: str | None = Field(default=None, description="default --model")
    stages: list[Stage]


def load_recipe(path: Path) -> Recipe:
    path = Path(path)
    data = read_mapping(path, "recipe")
    check_finite(data, path)
    check_schema_version(path, data, RECIPE_SCHEMA_VERSION, required=False, hint="see recipes/README.md")
    unknown = set(data) - set(Recipe.model_fields)
    if unknown:
        raise ConfigError(f"{path}: unknown field '{sorted(map(str, unknown))[0]}'",
                          "allowed: " + ", ".join(Recipe.model_fields))
    for key in ("name", "stages"):
        if key not in data:
            raise ConfigError(f"{path}: missing field '{key}'", "see recipes/README.md")
    raw = data["stages"]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{path}: field 'stages' must be a non-empty list of stages", "see recipes/README.md")
    kinds = sorted({k for k, _ in STAGES})
    stages = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or "kind" not in item:
            raise ConfigError(f"{path}: stage {i + 1}: missing field 'kind'", "kind is one of: " + ", ".join(kinds))
        kind, method = item["kind"], item.get("method")
        if not isinstance(kind, str) or kind not in kinds:
            raise ConfigError(f"{path}: stage {i + 1}: unknown stage kind {kind!r}"[:300],
                              "kind is one of: " + ", ".join(kinds))
        key = (kind, method if kind in ("prune", "quantize") and isinstance(method, str) else None)
        if key not in STAGES:
            methods = ", ".join(str(m) for k, m in STAGES if k == kind)
            raise ConfigError(f"{path}: stage {i + 1} ({kind}): unknown or missing field 'method' ({method!r})"[:300],
                              f"{kind} methods: {methods}")
        label = f"{kind}{'/' + method if key[1] else ''}"
        try:
            stages.append(STAGES[key].model_validate(item))
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(f"{path}: stage {i + 1} ({label})", exc),
                              "see recipes/README.md") from None
    try:
        recipe = Recipe(name=data["name"], description=data.get("description", ""), model=data.get("model"),
                        stages=stages)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(path, exc), "see recipes/README.md") from None
    _check_order(path, recipe)
    return recipe


def _check_order(path: Path, recipe: Recipe) -> None:
    """Torch-level stages (prune, distill) must come before ONNX quantisation; at most one quantize."""
    seen_quant = None
    for i, stage in enumerate(recipe.stages):
        if isinstance(stage, ONNX_STAGES):
            if seen_quant is not None:
                raise ConfigError(f"{path}: stage {i + 1} (quantize): a second quantize stage",
                                  "use one quantize stage per recipe")
            seen_quant = i
        elif isinstance(stage, TORCH_STAGES) and seen_quant is not None:
            raise ConfigError(f"{path}: stage {i + 1} ({stage.kind}): comes after quantize",
                              "prune and distill work on the float model: put them before quantize")
