"""A directory written by ``aiflow compress`` as a model source (``--model DIR``).

Quantised results load as their ONNX graph (cut points found on the graph); float results
(pruned / distilled) rebuild the torch model, so they split and profile like the original.
"""

from __future__ import annotations

from pathlib import Path

from aiflow_cli.models.segmented import SegmentedModel
from aiflow_cli.schemas.loading import validate_file
from aiflow_cli.schemas.report import CompressedModel

__all__ = ["is_compressed_dir", "load_compressed"]


def is_compressed_dir(path: Path) -> bool:
    return (Path(path) / "compressed.json").is_file()


def load_compressed(spec: str, path: Path) -> SegmentedModel:
    path = Path(path)
    info = validate_file(path / "compressed.json", CompressedModel, hint="re-run aiflow compress", what="compressed.json")
    name = f"{info.recipe}"
    if info.quantized:
        from aiflow_cli.models.onnx_source import load_onnx

        model = load_onnx(spec, path / info.files["onnx"])
        model.name, model.task = name, info.task
        return model
    if info.architecture == "efficientnet-lite":
        from safetensors.torch import load_file

        from aiflow_cli.models.efficientnet_lite import EfficientNetLite
        from aiflow_cli.models.zoo import efficientnet_segmented

        net = EfficientNetLite.from_state_dict(load_file(str(path / info.files["weights"]))).eval()
        return efficientnet_segmented(spec, name, net)
    from aiflow_cli.models.hf import causal_lm_model, encoder_model

    hf_dir = path / info.files["hf_dir"]
    if info.architecture == "hf-causal-lm":
        return causal_lm_model(spec, name, hf_dir)
    return encoder_model(spec, name, hf_dir, pool=True)
