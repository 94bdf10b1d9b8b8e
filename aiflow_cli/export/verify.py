"""Check an exported pair against the unsplit PyTorch model on real inputs.

Lossless (fp32) pairs must match to ``1e-4 x output scale`` and, for classifiers, agree on
every top-1; lossy codecs must keep ``min_agreement`` top-1 agreement (classifiers) or
``min_cosine`` (embeddings). Every failing pair is collected before one error is raised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from aiflow_cli.errors import VerificationError
from aiflow_cli.export.runner import PairRunner
from aiflow_cli.models.segmented import SegmentedModel
from aiflow_cli.schemas.manifest import ExportedPair, Verification

__all__ = ["VerificationError", "verify_pair", "LOSSLESS_RTOL"]

LOSSLESS_RTOL = 1e-4
TRAINING_GRAPH_AGREEMENT = 0.99


@torch.no_grad()
def verify_pair(model: SegmentedModel, root: Path, pair: ExportedPair, inputs: list[Any], source: str,
                lossless: bool, min_agreement: float = 0.9, min_cosine: float = 0.98) -> Verification:
    runner = PairRunner(root, pair)
    reference, min_agreement, what = _reference(model, root, pair, min_agreement)
    max_diff, scale, agree, total, cosines = 0.0, 0.0, 0, 0, []
    for x in inputs:
        ref = reference(x).numpy()
        out = runner(x)[0][0]
        max_diff = max(max_diff, float(np.abs(out - ref).max()))
        scale = max(scale, float(np.abs(ref).max()))
        if model.task == "sentence-embedding":
            cos = (out * ref).sum(-1) / (np.linalg.norm(out, axis=-1) * np.linalg.norm(ref, axis=-1))
            cosines.extend(cos.tolist())
        else:
            agree += int((out.argmax(-1) == ref.argmax(-1)).sum())
            total += int(np.prod(ref.shape[:-1]))
    agreement = agree / total if total else None
    mean_cos = float(np.mean(cosines)) if cosines else None
    if lossless:
        passed = max_diff <= LOSSLESS_RTOL * scale and (agreement is None or agreement == 1.0)
    elif agreement is not None:
        passed = agreement >= min_agreement
    else:
        passed = mean_cos is not None and mean_cos >= min_cosine
    return Verification(reference=what, inputs=source, count=sum(int(np.prod(_batch_size(x))) for x in inputs),
                        max_abs_diff=max_diff, output_scale=scale, agreement=agreement, mean_cosine=mean_cos,
                        passed=passed)


def _reference(model: SegmentedModel, root: Path, pair: ExportedPair, min_agreement: float):  # noqa: ANN202
    """What the pair must reproduce, and its name: the unsplit model, or, for a learned bottleneck,
    its training graph (PyTorch segments + the trained networks with rounding), to 99% top-1 agreement."""
    if pair.codec.name != "learned-bottleneck":
        return model.whole, min_agreement, "the unsplit model"
    from aiflow_cli.codecs.learned import LearnedBottleneckCodec

    net = LearnedBottleneckCodec.load_net(pair.codec.params, Path(root) / pair.directory)
    device, server = model.segments[: pair.cut_index + 1], model.segments[pair.cut_index + 1:]

    def graph(x: Any) -> torch.Tensor:
        h = x
        for seg in device:
            h = seg.module(h)
        h = net.reconstruct(net.quantize(net.encode(h)))
        for seg in server:
            h = seg.module(h)
        return h

    return graph, TRAINING_GRAPH_AGREEMENT, ("the training graph (PyTorch segments + the trained bottleneck "
                                             "with rounding), not the unsplit model")


def _batch_size(x: Any) -> int:
    from aiflow_cli.tensors import tensors_of

    return tensors_of(x)[0].shape[0]
