"""A directory written by ``aiflow compress`` as a model source (``--model DIR``).

Quantised results load as their ONNX graph (cut points found on the graph); float results
(pruned / distilled) rebuild the torch model, so they split and profile like the original.
"""

from __future__ import annotations

import json
from pathlib import Path

from aiflow_cli.errors import ModelSourceError
from aiflow_cli.models.segmented import Segment, SegmentedModel
from aiflow_cli.schemas.report import CompressedModel

__all__ = ["is_compressed_dir", "load_compressed"]


def is_compressed_dir(path: Path) -> bool:
    return (Path(path) / "compressed.json").is_file()


def load_compressed(spec: str, path: Path) -> SegmentedModel:
    path = Path(path)
    try:
        info = CompressedModel.model_validate(json.loads((path / "compressed.json").read_text()))
    except Exception as exc:
        raise ModelSourceError(f"{path}/compressed.json: not a valid aiflow compress result: {exc}") from exc
    name = f"{info.recipe}"
    if info.quantized:
        from aiflow_cli.models.onnx_source import load_onnx

        model = load_onnx(spec, path / info.files["onnx"])
        model.name, model.task = name, info.task
        return model
    if info.architecture == "efficientnet-lite":
        from safetensors.torch import load_file

        from aiflow_cli.models.efficientnet_lite import EfficientNetLite
        from aiflow_cli.models.inputs import image_input

        net = EfficientNetLite.from_state_dict(load_file(str(path / info.files["weights"]))).eval()
        segments = [Segment("stem", net.stem())] + [Segment(f"block{i}", b) for i, b in enumerate(net._blocks)]
        segments.append(Segment("head", net.head()))
        return SegmentedModel(spec=spec, name=name, task=info.task, segments=segments, whole=net,
                              make_input=lambda batch, _seq: image_input(batch), input_names=["image"],
                              crossing_names=["activation"], output_names=["logits"])
    from aiflow_cli.models.hf import causal_lm_model, encoder_model

    hf_dir = path / info.files["hf_dir"]
    if info.architecture == "hf-causal-lm":
        return causal_lm_model(spec, name, hf_dir)
    return encoder_model(spec, name, hf_dir, pool=True)
