"""``verify_export()`` and ``export_speculative()``: check an export directory against its manifest
and model; export a draft / target pair for speculative decoding across the link."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

from pydantic import Field

from aiflow_cli.settings import Settings

if TYPE_CHECKING:
    from aiflow_cli.schemas.manifest import Manifest

__all__ = ["VerifySettings", "verify_export", "SpeculativeSettings", "export_speculative"]

Progress = Callable[[str, int, int], None]


class VerifySettings(Settings):
    directory: Path = Field(description="A folder written by aiflow split --export.")
    verify_count: int = Field(50, ge=1, description="Real inputs to re-run each pair on (1 or more).")
    trust_remote_code: bool = Field(False, description="Allow hf: models to run code from their repository.")
    trust_source: bool = Field(False, description="Allow the manifest's source_model.spec to be py:module:function.")


def verify_export(settings: VerifySettings) -> "Manifest":
    """The manifest's schema, every path, size and sha256, every declared tensor against the graphs,
    the source model's weights and cuts, then every pair re-run against its reference."""
    from aiflow_cli.export.check import verify_export_dir

    return verify_export_dir(settings.directory, count=settings.verify_count,
                             trust_remote_code=settings.trust_remote_code, trust_source=settings.trust_source)


class SpeculativeSettings(Settings):
    draft: str = Field(description="The device's draft model: a causal LM sharing the target's tokenizer (zoo:..., "
                                   "hf:..., or a folder from aiflow compress).")
    target: str = Field(description="The server's target model (zoo:..., hf:..., a folder).")
    export: Path = Field(description="Write draft.onnx, target.onnx, the tokenizer and manifest.json here (all or "
                                     "nothing).")
    weights: Literal["fp32", "int8", "int4", "int4-f32"] = Field(
        "fp32", description="fp32 (the models' own weights), int8 (every MatMul and the embedding int8, activations "
                            "quantised per pass: a verification's cost grows least with k; near-ties may flip, "
                            "counted), int4 (every MatMul 4-bit, MatMulNBits with int8 compute: "
                            "needed for models over 2 GB in fp32, e.g. the Qwen pair; k-token and 1-token passes can "
                            "round apart and flip near-ties) or int4-f32 (the same weights, fp32 compute: 2-3x slower "
                            "here, no such flips).")
    draft_weights: Literal["fp32", "int8", "int4", "int4-f32"] | None = Field(
        None, description="The draft's weights when they should differ from the target's (default: --weights), "
                          "e.g. --weights int8 --draft-weights int4: the cheapest one-token draft, the flattest "
                          "verifier.")
    force: bool = Field(False, description="Replace an existing export folder.")
    exporter: Literal["optimum", "dynamo", "torchscript"] = Field(
        "optimum", description="ONNX exporter: optimum (default; optimum-onnx's text-generation-with-past graph, "
                               "past_key_values.N.key/value), or aiflow's own KV graph through dynamo or torchscript.")
    trust_remote_code: bool = Field(False, description="Allow hf: models to run code from their repository.")



def export_speculative(settings: SpeculativeSettings, progress: Progress | None = None) -> "Manifest":
    """Load both models, refuse different vocabularies, export both with a KV cache, and write the pair
    only if speculative greedy decoding through both graphs reproduces the target's own."""
    from aiflow_cli.export.speculative import check_same_tokenizer
    from aiflow_cli.export.speculative import export_speculative as export_pair
    from aiflow_cli.models import load_model
    from aiflow_cli.models.sources import load_tokenizer_of

    s = settings
    tokenizers = [load_tokenizer_of(spec, s.trust_remote_code) for spec in (s.draft, s.target)]
    if None not in tokenizers:  # a mismatch is refused in seconds, before the models' weights load
        check_same_tokenizer(*tokenizers)
    if progress:
        progress("load models", 0, 2)
    draft = load_model(s.draft, trust_remote_code=s.trust_remote_code)
    target = load_model(s.target, trust_remote_code=s.trust_remote_code)
    if progress:
        progress("load models", 2, 2)
    return export_pair(draft, target, s.export, force=s.force, progress=progress, weights=s.weights,
                       exporter=s.exporter, draft_weights=s.draft_weights)
