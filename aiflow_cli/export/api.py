"""Export one or more cuts into a directory: pairs, Triton repository, manifest — all or nothing.

Everything is built in a temporary sibling directory, every pair is verified against the
unsplit model, and only then is the directory renamed into place. A pair that fails
verification leaves nothing behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from torch import nn

from aiflow_cli import __version__
from aiflow_cli.codecs.base import ActivationCodec
from aiflow_cli.errors import InputError, VerificationError
from aiflow_cli.export.kserve import write_inference_service
from aiflow_cli.export.pair import exit_output_name, export_pair
from aiflow_cli.export.triton import write_triton_pair
from aiflow_cli.export.verify import verify_pair
from aiflow_cli.models.reference_inputs import real_inputs
from aiflow_cli.models.segmented import SegmentedModel
from aiflow_cli.onnx_io import OPSET, Exporter
from aiflow_cli.schemas.manifest import (
    CodecInfo,
    ExitDecl,
    ExportedPair,
    Manifest,
    PairCost,
    SourceModel,
)
from aiflow_cli.staging import staged_dir

__all__ = ["export_split", "source_model_of"]


def export_split(model: SegmentedModel, cuts: list[str], codecs: dict[str, ActivationCodec], out_dir: Path,
                 force: bool = False, triton: bool = True, verify_count: int = 50,
                 predicted: dict[str, dict[str, float]] | None = None, bytes_per_request: dict[str, int] | None = None,
                 costs: dict[str, PairCost] | None = None,
                 plan_table: list[dict[str, Any]] | None = None,
                 progress: Callable[[str, int, int], None] | None = None,
                 exits: dict[str, list[tuple[str, nn.Module, dict[str, float]]]] | None = None,
                 exporter: Exporter = "dynamo") -> Manifest:
    """Export, verify and describe one pair per cut. ``exits``: cut -> [(exit cut, head, {threshold,
    exit_rate, drop})], heads at or before the cut, written into that pair's device.onnx. ``exporter``:
    see :mod:`aiflow_cli.onnx_io` (dynamo, falling back per graph to TorchScript where it fails)."""
    out_dir = Path(out_dir)
    indices = [model.cut_index(c) for c in cuts]  # unknown cut -> error listing the valid ones
    if not cuts:
        raise InputError("nothing to export", "name a cut with --cut, or give links so a best cut is chosen")
    with staged_dir(out_dir, force) as tmp:
        example = model.make_input(1, model.default_seq_len and 16)
        inputs, source = real_inputs(model, "verification", verify_count)
        pairs, failures = [], []
        for n, (cut, index) in enumerate(zip(cuts, indices)):
            codec = codecs[cut]
            pair_exits = (exits or {}).get(cut, [])
            heads = {model.cut_index(e): head for e, head, _ in pair_exits}
            if any(i > index for i in heads):
                raise InputError(f"an exit after the cut {cut} cannot run on the device", "choose exits at or before it")
            files = export_pair(model, index, codec, tmp, example, exits=heads or None, exporter=exporter)
            write_weights = getattr(codec, "write_weights", None)
            if write_weights is not None:  # learned codecs keep their training graph beside the pair
                write_weights(tmp / files.device.file.rsplit("/", 1)[0])
            spec = codec.spec()
            pair = ExportedPair.model_construct(  # a draft: validated once its verification is filled in
                cut=cut, cut_index=index, directory=files.device.file.rsplit("/", 1)[0],
                codec=CodecInfo(name=spec.name, params=spec.params), device=files.device, server=files.server,
                crossing=files.crossing, predicted_latency_ms=(predicted or {}).get(cut, {}),
                bytes_per_request=(bytes_per_request or {}).get(cut), cost=(costs or {}).get(cut),
                exits=[ExitDecl(cut=e, output=exit_output_name(e), **stats) for e, _, stats in pair_exits],
                verification=None,
            )
            pair = ExportedPair.model_validate({**dict(pair), "verification": verify_pair(
                model, tmp, pair, inputs, source, lossless=codec.lossless)})
            if not pair.verification.passed:
                v = pair.verification
                failures.append(f"{cut}: max diff {v.max_abs_diff:.3g} (scale {v.output_scale:.3g}), "
                                f"agreement {v.agreement}, cosine {v.mean_cosine}")
            pairs.append(pair)
            if progress:
                progress("export + verify", n + 1, len(cuts))
        if failures:
            raise VerificationError(f"{len(failures)} pair(s) failed verification, nothing written: "
                                    + "; ".join(failures))
        if triton:
            for pair in pairs:
                write_triton_pair(tmp, model.name, pair)
            write_inference_service(tmp, model.name, pairs, out_dir.name)
        manifest = Manifest(
            aiflow_version=__version__,
            source_model=source_model_of(model), opset=OPSET, pairs=pairs, plan_table=plan_table or [],
        )
        (tmp / "manifest.json").write_text(json.dumps(manifest.model_dump(mode="json"), indent=1) + "\n")
    return manifest


def source_model_of(model: SegmentedModel) -> SourceModel:
    """What the manifest says about the model the pairs were cut from (weights labelled for what they are)."""
    return SourceModel(spec=model.spec, name=model.name, task=model.task, fingerprint=model.fingerprint(),
                       weights=model.extras.get("weights", ""))
