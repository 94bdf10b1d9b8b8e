"""Resolve one ``--model`` value to a :class:`SegmentedModel`.

Accepted forms: ``zoo:NAME``, ``hf:ID_OR_PATH``, ``PATH.onnx``, ``py:module:function``, and a
directory written by ``aiflow compress``.
"""

from __future__ import annotations

from pathlib import Path

from aiflow_cli.errors import ModelSourceError
from aiflow_cli.models.segmented import SegmentedModel

__all__ = ["load_model", "load_model_named_in_file", "load_tokenizer_of", "MODEL_FORMS"]

MODEL_FORMS = "zoo:NAME, hf:ID_OR_PATH, FILE.onnx, py:module:function or a compressed DIR"


def load_model(spec: str, trust_remote_code: bool = False) -> SegmentedModel:
    if spec.startswith("zoo:"):
        from aiflow_cli.models.zoo import load_zoo

        return load_zoo(spec[4:])
    if spec.startswith("hf:"):
        from aiflow_cli.models.hf import load_hf

        return load_hf(spec, spec[3:], trust_remote_code)
    if spec.startswith("py:"):
        from aiflow_cli.models.fx_source import load_py

        return load_py(spec, spec[3:])
    if spec.endswith(".onnx"):
        from aiflow_cli.models.onnx_source import load_onnx

        return load_onnx(spec, Path(spec))
    from aiflow_cli.models.compressed import is_compressed_dir, load_compressed

    if Path(spec).is_dir() and is_compressed_dir(Path(spec)):
        return load_compressed(spec, Path(spec))
    if Path(spec).exists():
        raise ModelSourceError(f"{spec}: not a model this tool reads", f"pass one of {MODEL_FORMS}")
    raise ModelSourceError(f"unknown model '{spec}'", f"pass one of {MODEL_FORMS}")


def load_model_named_in_file(spec: str, where: str, trust_source: bool = False,
                             trust_remote_code: bool = False) -> SegmentedModel:
    """Load a model a *file* names (a manifest's source, a recipe's ``model:``).

    A ``py:`` spec imports and runs a module, so a file can only ask for one when the user
    passed ``--trust-source``; typed on the command line, ``py:`` is the user's own choice.
    """
    if not isinstance(spec, str) or not spec:
        raise ModelSourceError(f"{where}: no model named", f"name one of {MODEL_FORMS}")
    if spec.startswith("py:") and not trust_source:
        raise ModelSourceError(f"{where}: '{spec[:80]}' would import and run Python code named in the file",
                               "pass --trust-source if you trust where this file came from")
    return load_model(spec, trust_remote_code=trust_remote_code)


def load_tokenizer_of(spec: str, trust_remote_code: bool = False):  # noqa: ANN201 - a tokenizer, or None
    """The tokenizer of ``spec`` without loading its weights, where that is cheap (zoo and ``hf:``
    models); None where it is not (the caller then checks after the full load)."""
    if spec.startswith("zoo:"):
        from aiflow_cli.models.zoo import ZOO, zoo_tokenizer

        return zoo_tokenizer(spec[4:]) if spec[4:] in ZOO else None
    if spec.startswith("hf:"):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(spec[3:], trust_remote_code=trust_remote_code)
        except (OSError, ValueError):
            return None  # the full load names the problem
    return None
