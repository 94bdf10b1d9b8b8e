"""Quantisation stages, all through onnxruntime.quantization (no hand-written kernels).

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


def _fuse_transformer(fp32: Path, out: Path, kit: TaskKit) -> bool:
    """onnxruntime transformer fusions (attention, skip-layernorm, gelu) for BERT-style encoders."""
    if kit.model.task != "sentence-embedding":
        return False
    from onnxruntime.transformers.optimizer import optimize_model

    hf = kit.model.whole.model
    opt = optimize_model(str(fp32), model_type="bert", num_heads=hf.config.num_attention_heads,
                         hidden_size=hf.config.hidden_size, opt_level=1)
    opt.save_model_to_file(str(out))
    return True


def quantize_dynamic_stage(fp32: Path, out: Path, stage: QuantizeDynamic, kit: TaskKit) -> tuple[dict[str, Any], Path | None]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, fused = fp32, None
    if stage.optimize:
        candidate = fp32.with_name("baseline-fused.onnx")
        if _fuse_transformer(fp32, candidate, kit):
            source = fused = candidate
    # fused (com.microsoft) ops defeat shape inference; their outputs are float
    quantize_dynamic(str(source), str(out), per_channel=stage.per_channel, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    fused_ops = sorted({n.op_type for n in onnx.load(str(source)).graph.node if n.domain == "com.microsoft"})
    return {"per_channel": stage.per_channel, "fused_ops": fused_ops}, fused


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
