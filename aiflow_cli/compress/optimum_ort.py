"""Transformer fusions and dynamic int8 through optimum's wrappers of onnxruntime.

``ORTOptimizer`` with ``AutoOptimizationConfig`` (O1-O3) applies onnxruntime's transformer fusions
(Attention, SkipLayerNormalization, BiasGelu, ...) and ``ORTQuantizer`` with
``AutoQuantizationConfig`` (``avx512_vnni``, ``avx512``, ``avx2``, ``arm64``) quantises weights to
int8 with the operator set and ranges optimum chose for that instruction set: the configs users of
``optimum-cli onnxruntime quantize`` already know, recorded in the report as optimum prints them.

What stays on onnxruntime directly, and why: static int8 (optimum calibrates from a
``datasets.Dataset``; the photos here come from a labels file) and 4-bit MatMulNBits (optimum has
no 4-bit config).
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path
from typing import Any

import onnx

__all__ = ["OPTIMIZATION_LEVELS", "QUANTIZATION_TARGETS", "host_quantization_target", "optimize", "quantize_dynamic",
           "optimizable"]

OPTIMIZATION_LEVELS = ("none", "O1", "O2", "O3")  # O4 is O3 + fp16, a GPU setting
QUANTIZATION_TARGETS = ("avx512_vnni", "avx512", "avx2", "arm64")


def host_quantization_target() -> str:
    """The AutoQuantizationConfig for this CPU: arm64 on ARM, else the widest x86 set it has."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    return next((t for t, f in (("avx512_vnni", "avx512_vnni"), ("avx512", "avx512f")) if f in flags), "avx2")


def optimizable(hf_config: Any | None) -> str | None:
    """None when optimum has fusions for this model type, else why not (one phrase)."""
    from optimum.onnxruntime.utils import ORTConfigManager

    if hf_config is None:
        return "not a transformers model"
    model_type = getattr(hf_config, "model_type", "")
    try:
        ORTConfigManager.check_supported_model(model_type)
    except KeyError:
        return f"optimum has no fusions for model type '{model_type}'"
    return None


def _folder_for(model: Path, hf_config: Any | None, work: Path, link: bool = True) -> Path:
    """``work`` holding ``model.onnx`` (a hard link where possible, else a copy) and, for optimum's
    config lookup, the model's ``config.json``."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        os.link(model, work / "model.onnx") if link else shutil.copyfile(model, work / "model.onnx")
    except OSError:  # another file system: copy
        shutil.copyfile(model, work / "model.onnx")
    if hf_config is not None:
        hf_config.save_pretrained(str(work))
    return work


def _type_contrib_outputs(path: Path) -> None:
    """Give every com.microsoft op's outputs a type (float; EmbedLayerNormalization's mask index
    int32), then re-run shape inference. ONNX's own inference stops at contrib ops, and the
    quantiser then cannot type the MatMuls after them; onnxruntime's ``quantize_dynamic`` takes
    ``DefaultTensorType`` for this, optimum's wrapper has no way to pass it."""
    model = onnx.load(str(path))
    model = onnx.shape_inference.infer_shapes(model)
    known = {v.name for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]}
    for node in model.graph.node:
        if node.domain != "com.microsoft":
            continue
        for i, name in enumerate(node.output):
            if name and name not in known:
                elem = onnx.TensorProto.INT32 if (node.op_type == "EmbedLayerNormalization" and i == 1) \
                    else onnx.TensorProto.FLOAT
                model.graph.value_info.append(onnx.helper.make_tensor_value_info(name, elem, None))
    onnx.save(onnx.shape_inference.infer_shapes(model), str(path))


def optimize(fp32: Path, out: Path, hf_config: Any, level: str, options: dict[str, Any] | None = None
             ) -> dict[str, Any]:
    """``fp32`` fused by ``ORTOptimizer`` at ``level`` (plus ``options``, OptimizationConfig fields)
    into ``out``; the figures for the report."""
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    config = AutoOptimizationConfig.with_optimization_level(level, **(options or {}))
    work = _folder_for(fp32, hf_config, out.parent / ".optimum-optimize")
    try:
        ORTOptimizer.from_pretrained(work, file_names=["model.onnx"]).optimize(config, work / "out")
        (work / "out" / "model_optimized.onnx").replace(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    fused = sorted({n.op_type for n in onnx.load(str(out)).graph.node if n.domain == "com.microsoft"})
    return {"optimization": level, "optimization_options": options or {}, "fused_ops": fused}


def quantize_dynamic(source: Path, out: Path, target: str, per_channel: bool) -> dict[str, Any]:
    """``source`` quantised by ``ORTQuantizer`` with ``AutoQuantizationConfig.<target>`` (dynamic,
    ``per_channel``) into ``out``; the figures for the report."""
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    config = getattr(AutoQuantizationConfig, target)(is_static=False, per_channel=per_channel)
    work = _folder_for(source, None, out.parent / ".optimum-quantize", link=False)  # typed in place below
    try:
        _type_contrib_outputs(work / "model.onnx")
        ORTQuantizer.from_pretrained(work, file_name="model.onnx").quantize(config, work / "out")
        (work / "out" / "model_quantized.onnx").replace(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"quantization": target, "per_channel": per_channel, "optimum_config": str(config)}
