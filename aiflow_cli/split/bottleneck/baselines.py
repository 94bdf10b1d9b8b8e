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
from aiflow_cli.split.bottleneck.defaults import JPEG_QUALITIES
from aiflow_cli.split.bottleneck.features import CutFeatures, SplitFeatures
from aiflow_cli.split.bottleneck.scoring import score_logits

__all__ = ["Baseline", "jpeg_baselines", "jpeg_roundtrip", "activation_baselines", "uniform_baselines",
           "UniformQuantizer", "UNIFORM_STEPS", "JPEG_QUALITIES"]

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


class UniformQuantizer:
    """The non-learned codec the learned one must beat: standardise each channel with training
    statistics, round with ``step`` standard deviations, range-code with per-channel histograms of
    the training symbols (Laplace-smoothed). Works on (N, C, H, W); text callers pass each token as
    a (C, 1, 1) "image". ``robust`` scales by the median absolute deviation instead of the standard
    deviation: in a language model's residual stream a few tokens carry activations hundreds of
    times the rest, which would make every step coarse for ordinary tokens."""

    def __init__(self, train: torch.Tensor, step: float, robust: bool = False) -> None:
        self.step = step
        if robust:  # median and 1.4826 x median absolute deviation: a few huge outliers don't set the step
            flat = train.transpose(0, 1).reshape(train.shape[1], -1)
            self.mean = flat.median(1).values.view(1, -1, 1, 1)
            mad = (flat - self.mean.view(-1, 1)).abs().median(1).values
            floor = 0.01 * flat.std(1)  # a channel that is mostly constant still gets a usable step
            self.std = torch.maximum(1.4826 * mad, floor).clamp_min(1e-6).view(1, -1, 1, 1)
        else:
            self.mean = train.mean((0, 2, 3), keepdim=True)
            self.std = train.std((0, 2, 3), keepdim=True).clamp_min(1e-6)
        q_train = torch.round((train - self.mean) / (self.std * step)).int()
        lo, hi = q_train.amin((0, 2, 3)), q_train.amax((0, 2, 3))
        pmfs = []
        for c in range(q_train.shape[1]):
            counts = torch.bincount((q_train[:, c] - lo[c]).reshape(-1), minlength=int(hi[c] - lo[c] + 1)).double()
            pmfs.append(((counts + 1) / (counts.sum() + len(counts))).numpy())  # Laplace smoothing
        self.tables = EntropyTables([int(v) for v in lo], pmfs)
        self.lo, self.hi = lo.view(1, -1, 1, 1), hi.view(1, -1, 1, 1)

    @torch.no_grad()
    def roundtrip(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(reconstruction, range-coded bytes) of one message."""
        q = torch.maximum(torch.minimum(torch.round((x - self.mean) / (self.std * self.step)).int(), self.hi), self.lo)
        data = self.tables.encode(q.numpy())
        return torch.from_numpy(self.tables.decode(data)).float() * self.std * self.step + self.mean, len(data)


@torch.no_grad()
def uniform_baselines(server: nn.Module, feats: CutFeatures, steps: tuple[float, ...] = UNIFORM_STEPS) -> list[Baseline]:
    out = []
    for step in steps:
        quantizer = UniformQuantizer(feats.train.x, step)
        sizes, logits = [], []
        for i in range(len(feats.test)):
            back, nbytes = quantizer.roundtrip(feats.test.x[i:i + 1])
            sizes.append(nbytes)
            logits.append(server(back))
        out.append(Baseline(f"uniform-q{step:g}@{feats.cut}", float(np.mean(sizes)),
                            score_logits(torch.cat(logits), feats.test)))
    return out
