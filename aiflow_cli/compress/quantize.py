"""Quantisation stages: dynamic int8 through optimum's ORTQuantizer, static int8 and 4-bit through
onnxruntime.quantization (no hand-written kernels).

Each takes the float ONNX file and writes the quantised one; it returns the figures for the
report and, for dynamic quantisation with fusions, the fused float model that becomes the fair
baseline (same graph optimisations as the int8 model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from aiflow_cli.compress.tasks import TaskKit
from aiflow_cli.schemas.recipe import QuantizeDynamic, QuantizeInt4, QuantizeStatic

__all__ = ["quantize_dynamic_stage", "quantize_static_stage", "quantize_int4_stage"]


def quantize_dynamic_stage(fp32: Path, out: Path, stage: QuantizeDynamic, kit: TaskKit) -> tuple[dict[str, Any], Path | None]:
    """Dynamic int8 through optimum (:mod:`aiflow_cli.compress.optimum_ort`): fusions first where
    optimum has them for the model type (the fused fp32 graph is returned as the fair baseline),
    then ``ORTQuantizer``. (figures, fused fp32 graph or None)."""
    from aiflow_cli.compress import optimum_ort

    source, fused = fp32, None
    figures: dict[str, Any] = {"optimization": "none"}
    if stage.optimization != "none":
        config = kit.hf_config()
        why_not = optimum_ort.optimizable(config)
        if why_not is None:
            fused = fp32.with_name("baseline-fused.onnx")
            figures = optimum_ort.optimize(fp32, fused, config, stage.optimization, stage.optimization_options)
            source = fused
        else:
            figures = {"optimization": f"none ({why_not})"}
    target = stage.quantization or optimum_ort.host_quantization_target()
    figures.update(optimum_ort.quantize_dynamic(source, out, target, stage.per_channel))
    return figures, fused


class _Reader:
    """onnxruntime CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def quantize_static_stage(fp32: Path, out: Path, stage: QuantizeStatic, kit: TaskKit) -> dict[str, Any]:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = fp32.with_name("static-pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    feeds = kit.calibration_feeds(stage.calibration_samples)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[stage.calibrate_method]
    quantize_static(str(pre), str(out), _Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=stage.per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method)
    pre.unlink(missing_ok=True)
    return {"calibration_inputs": len(feeds), "per_channel": stage.per_channel, "format": "QDQ",
            "calibrate_method": stage.calibrate_method}


def quantize_int4_stage(fp32: Path, out: Path, stage: QuantizeInt4, kit: TaskKit | None) -> dict[str, Any]:
    import logging

    from onnxruntime.quantization import matmul_nbits_quantizer as mq

    logging.getLogger(mq.__name__).setLevel(logging.WARNING)  # one INFO line per MatMul otherwise

    if stage.algorithm == "hqq":
        config = mq.HQQWeightOnlyQuantConfig(block_size=stage.block_size, bits=4)
        quantizer = mq.MatMulNBitsQuantizer(onnx.load(str(fp32)), algo_config=config)
    else:
        quantizer = mq.MatMulNBitsQuantizer(onnx.load(str(fp32)), block_size=stage.block_size,
                                            is_symmetric=stage.symmetric, accuracy_level=stage.accuracy_level)
    quantizer.process()
    quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
    model = onnx.load(str(out))
    n_bits = sum(1 for n in model.graph.node if n.op_type == "MatMulNBits")
    n_float = sum(1 for n in model.graph.node if n.op_type == "MatMul")
    return {"algorithm": stage.algorithm, "block_size": stage.block_size,
            **({"symmetric": stage.symmetric, "accuracy_level": stage.accuracy_level} if stage.algorithm == "rtn" else {}),
            "matmuls_4bit": n_bits, "matmuls_float": n_float}
