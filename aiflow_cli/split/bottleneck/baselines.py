"""What the learned bottleneck must beat, measured on the same test images with the same care.

* ``jpeg-qNN``: upload the 224x224 centre crop as JPEG (server-only). The server decodes the
  JPEG and feeds it to the model as it is (224x224, normalised), exactly as the model sees the
  uncompressed crop; no second resize or crop.
* ``fp16@CUT``, ``int8-zstd@CUT``: the plain activation codecs at the same cut.
* ``uniform-qSTEP@CUT``: the strong non-learned codec: standardise each channel with training
  statistics, quantise with step STEP (in standard deviations), entropy-code with per-channel
  histograms calibrated on the training split (Laplace-smoothed), real bytes via the same range
  coder as the learned codec.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from aiflow_cli.codecs import make_codec
from aiflow_cli.codecs.entropy import EntropyTables
from aiflow_cli.schemas.bottleneck import Scores
from aiflow_cli.split.bottleneck.features import CutFeatures, SplitFeatures
from aiflow_cli.split.bottleneck.scoring import score_logits

__all__ = ["Baseline", "jpeg_baselines", "jpeg_roundtrip", "activation_baselines", "uniform_baselines",
           "UNIFORM_STEPS", "JPEG_QUALITIES"]

JPEG_QUALITIES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
UNIFORM_STEPS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


@dataclass
class Baseline:
    name: str
    bytes_per_input: float
    test: Scores


def jpeg_roundtrip(crop: Image.Image, quality: int) -> tuple[torch.Tensor, int]:
    """(the model's input after a JPEG upload of ``crop``, bytes uploaded)."""
    from aiflow_cli.data.imagenet import to_tensor

    buf = io.BytesIO()
    crop.save(buf, format="JPEG", quality=quality)
    size = buf.tell()
    buf.seek(0)
    with Image.open(buf) as decoded:
        return to_tensor(decoded), size


@torch.no_grad()
def jpeg_baselines(whole: nn.Module, roots: list[Path], test: SplitFeatures,
                   qualities: tuple[int, ...] = JPEG_QUALITIES) -> list[Baseline]:
    from aiflow_cli.data.imagenet import center_crop, read_labels

    crops = []
    for r in read_labels(roots, "test"):
        with Image.open(r.path) as img:
            crops.append(center_crop(img.convert("RGB")))
    out = []
    for q in qualities:
        pairs = [jpeg_roundtrip(crop, q) for crop in crops]
        tensors = torch.stack([t for t, _ in pairs])
        logits = torch.cat([whole(tensors[i:i + 50]) for i in range(0, len(tensors), 50)])
        out.append(Baseline(f"jpeg-q{q}", float(np.mean([n for _, n in pairs])), score_logits(logits, test)))
    return out


@torch.no_grad()
def activation_baselines(server: nn.Module, feats: CutFeatures, names: tuple[str, ...] = ("fp16", "int8-channel+zstd")
                         ) -> list[Baseline]:
    out = []
    for name in names:
        codec = make_codec(name)
        codec.calibrate([feats.train.x[i:i + 100] for i in range(0, len(feats.train), 100)])
        sizes, logits = [], []
        for i in range(len(feats.test)):
            back, nbytes = codec.roundtrip(feats.test.x[i:i + 1])
            sizes.append(nbytes)
            logits.append(server(back))
        label = name.replace("-channel+zstd", "-zstd").replace("+", "-")
        out.append(Baseline(f"{label}@{feats.cut}", float(np.mean(sizes)), score_logits(torch.cat(logits), feats.test)))
    return out


@torch.no_grad()
def uniform_baselines(server: nn.Module, feats: CutFeatures, steps: tuple[float, ...] = UNIFORM_STEPS) -> list[Baseline]:
    train = feats.train.x
    mean = train.mean((0, 2, 3), keepdim=True)
    std = train.std((0, 2, 3), keepdim=True).clamp_min(1e-6)
    out = []
    for step in steps:
        q_train = torch.round((train - mean) / (std * step)).int()
        lo, hi = q_train.amin((0, 2, 3)), q_train.amax((0, 2, 3))
        pmfs = []
        for c in range(q_train.shape[1]):
            counts = torch.bincount((q_train[:, c] - lo[c]).reshape(-1), minlength=int(hi[c] - lo[c] + 1)).double()
            pmfs.append(((counts + 1) / (counts.sum() + len(counts))).numpy())  # Laplace smoothing
        tables = EntropyTables([int(v) for v in lo], pmfs)
        lo4, hi4 = lo.view(1, -1, 1, 1), hi.view(1, -1, 1, 1)
        sizes, logits = [], []
        for i in range(len(feats.test)):
            x = feats.test.x[i:i + 1]
            q = torch.maximum(torch.minimum(torch.round((x - mean) / (std * step)).int(), hi4), lo4)
            data = tables.encode(q.numpy())
            sizes.append(len(data))
            back = torch.from_numpy(tables.decode(data)).float() * std * step + mean
            logits.append(server(back))
        out.append(Baseline(f"uniform-q{step:g}@{feats.cut}", float(np.mean(sizes)),
                            score_logits(torch.cat(logits), feats.test)))
    return out
