"""Hugging Face models (``hf:ID_OR_PATH``): encoders and causal LMs cut per layer.

Local folders load offline; hub ids work where a hub is reachable. Remote code runs only when the
user passes ``--trust-remote-code``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from aiflow_cli.errors import ModelSourceError
from aiflow_cli.models.inputs import encoder_input, token_input
from aiflow_cli.models.segmented import SegmentedModel
from aiflow_cli.models.transformer_segments import (
    CausalLMWhole,
    EncoderWhole,
    KVState,
    LastHidden,
    MeanPoolNormalize,
    decoder_segments,
    encoder_segments,
)

__all__ = ["encoder_model", "causal_lm_model", "load_hf", "load_tokenizer"]


MISTRAL_TYPES = ("mistral", "mistral3", "voxtral", "ministral", "pixtral")  # whose tokenizers that fix is for


def load_tokenizer(path: Path | str, config, trust_remote_code: bool = False):  # noqa: ANN001, ANN201
    """The model's tokenizer as saved, its pre-tokenizer untouched.

    transformers 4.57.3-4.57.6 warns that a local folder saved by those versions has "an incorrect
    regex pattern" whatever its model type (its skip for non-Mistral models applies only to folders
    written by 4.57.2 and older), and changes nothing unless ``fix_mistral_regex=True``. For a
    non-Mistral model the warning is a false alarm: the Qwen2.5-Coder tokenizer reloaded from
    aiflow's cache gives the GGUF-built tokenizer's ids on code, CJK, digits and whitespace runs
    (docs/benchmarks.md), so aiflow passes ``fix_mistral_regex=False`` there, which silences exactly
    that warning; a Mistral-family model keeps transformers' own behaviour."""
    from transformers import AutoTokenizer

    extra = {} if getattr(config, "model_type", None) in MISTRAL_TYPES else {"fix_mistral_regex": False}
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **extra)


def encoder_model(spec: str, name: str, path: Path | str, pool: bool, trust_remote_code: bool = False) -> SegmentedModel:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(path, dtype=torch.float32, trust_remote_code=trust_remote_code).eval()
    tokenizer = load_tokenizer(path, model.config, trust_remote_code)
    head = MeanPoolNormalize() if pool else LastHidden()
    vocab = model.config.vocab_size
    return SegmentedModel(
        spec=spec, name=name, task="sentence-embedding" if pool else "generic",
        segments=encoder_segments(model, head), whole=EncoderWhole(model, head).eval(),
        make_input=lambda batch, seq: encoder_input(batch, seq or 128, vocab),
        default_seq_len=128, tokenizer=tokenizer, sequence_axis=True,
        input_names=["input_ids", "attention_mask"], crossing_names=["hidden_states", "mask"],
        output_names=["embedding" if pool else "last_hidden_state"],
    )


def causal_lm_model(spec: str, name: str, path: Path | str, trust_remote_code: bool = False) -> SegmentedModel:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, trust_remote_code=trust_remote_code).eval()
    tokenizer = load_tokenizer(path, model.config, trust_remote_code)
    state = KVState()
    vocab = model.config.vocab_size
    return SegmentedModel(
        spec=spec, name=name, task="causal-lm",
        segments=decoder_segments(model, state), whole=CausalLMWhole(model, state).eval(),
        make_input=lambda batch, seq: token_input(batch, seq or 64, vocab),
        default_seq_len=64, tokenizer=tokenizer,
        extras={"kv_state": state, "hf_model": model, "config": model.config}, sequence_axis=True,
        input_names=["input_ids"], crossing_names=["hidden_states"], output_names=["logits"],
    )


def load_hf(spec: str, ident: str, trust_remote_code: bool = False) -> SegmentedModel:
    """Pick the segmentation from the architecture: causal LM (Llama-style) or BERT-style encoder."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(ident, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        where = "folder" if Path(ident).exists() else "model id (or the hub is unreachable)"
        raise ModelSourceError(f"hf:{ident}: cannot load a config from this {where}: {str(exc).splitlines()[0]}",
                               "pass a folder with config.json, or an id on a reachable hub") from exc
    archs = " ".join(config.architectures or [])
    name = Path(ident).name or ident
    if "CausalLM" in archs or getattr(config, "is_decoder", False) and not getattr(config, "is_encoder_decoder", False):
        model = causal_lm_model(spec, name, ident, trust_remote_code)
        if not hasattr(model.extras["hf_model"], "model") or not hasattr(model.extras["hf_model"].model, "layers"):
            raise ModelSourceError(f"hf:{ident}: causal LM {archs} has no model.layers to cut", "use py:module:function")
        return model
    if getattr(config, "model_type", "") in {"bert", "roberta", "xlm-roberta", "distilbert", "electra"} or "Bert" in archs:
        return encoder_model(spec, name, ident, pool=getattr(config, "model_type", "") == "bert" and
                             (Path(ident) / "modules.json").is_file(), trust_remote_code=trust_remote_code)
    raise ModelSourceError(f"hf:{ident}: architecture '{archs or config.model_type}' has no known cut points",
                           "export it to ONNX and pass the .onnx file, or use py:module:function")
