"""What the learned bottleneck must beat, measured on the same evaluation split.

* ``jpeg-qNN``: upload the 224x224 crop as JPEG (server-only), for qualities 10..95.
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
from aiflow_cli.split.bottleneck.features import CutFeatures

__all__ = ["Baseline", "jpeg_baselines", "activation_baselines", "uniform_baselines", "UNIFORM_STEPS", "JPEG_QUALITIES"]

JPEG_QUALITIES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
UNIFORM_STEPS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


@dataclass
class Baseline:
    name: str
    bytes_per_input: float
    metric: float
    agreement: float
    kl: float | None = None  # mean KL(unsplit || this), nats, where the baseline has logits


def _kl(logits: torch.Tensor, feats: CutFeatures) -> float:
    from torch.nn import functional as F

    return float(F.kl_div(F.log_softmax(logits, -1), F.log_softmax(feats.eval_logits, -1), log_target=True,
                          reduction="batchmean"))


def _score(logits: torch.Tensor, feats: CutFeatures) -> tuple[float, float]:
    pred = logits.argmax(-1)
    return float((pred == feats.eval_labels).float().mean()), float((pred == feats.eval_logits.argmax(-1)).float().mean())


@torch.no_grad()
def jpeg_baselines(whole: nn.Module, data_root: Path, feats: CutFeatures,
                   qualities: tuple[int, ...] = JPEG_QUALITIES) -> list[Baseline]:
    from aiflow_cli.data.imagenet import _center_crop, preprocess, read_labels

    records = read_labels(data_root, "eval")
    crops = [_center_crop(Image.open(r.path).convert("RGB")) for r in records]
    out = []
    for q in qualities:
        sizes, tensors = [], []
        for crop in crops:
            buf = io.BytesIO()
            crop.save(buf, format="JPEG", quality=q)
            sizes.append(buf.tell())
            buf.seek(0)
            tensors.append(preprocess(Image.open(buf)))
        logits = torch.cat([whole(torch.stack(tensors[i:i + 50])) for i in range(0, len(tensors), 50)])
        metric, agreement = _score(logits, feats)
        out.append(Baseline(f"jpeg-q{q}", float(np.mean(sizes)), metric, agreement))
    return out


@torch.no_grad()
def activation_baselines(server: nn.Module, feats: CutFeatures, names: tuple[str, ...] = ("fp16", "int8-channel+zstd")
                         ) -> list[Baseline]:
    out = []
    for name in names:
        codec = make_codec(name)
        codec.calibrate([feats.train_x[i:i + 100] for i in range(0, len(feats.train_x), 100)])
        sizes, logits = [], []
        for i in range(len(feats.eval_x)):
            back, nbytes = codec.roundtrip(feats.eval_x[i:i + 1])
            sizes.append(nbytes)
            logits.append(server(back))
        metric, agreement = _score(torch.cat(logits), feats)
        label = name.replace("-channel+zstd", "-zstd").replace("+", "-")
        out.append(Baseline(f"{label}@{feats.cut}", float(np.mean(sizes)), metric, agreement))
    return out


@torch.no_grad()
def uniform_baselines(server: nn.Module, feats: CutFeatures, steps: tuple[float, ...] = UNIFORM_STEPS) -> list[Baseline]:
    mean = feats.train_x.mean((0, 2, 3), keepdim=True)
    std = feats.train_x.std((0, 2, 3), keepdim=True).clamp_min(1e-6)
    out = []
    for step in steps:
        q_train = torch.round((feats.train_x - mean) / (std * step)).int()
        lo, hi = q_train.amin((0, 2, 3)), q_train.amax((0, 2, 3))
        pmfs = []
        for c in range(q_train.shape[1]):
            counts = torch.bincount((q_train[:, c] - lo[c]).reshape(-1), minlength=int(hi[c] - lo[c] + 1)).double()
            pmfs.append(((counts + 1) / (counts.sum() + len(counts))).numpy())  # Laplace smoothing
        tables = EntropyTables([int(v) for v in lo], pmfs)
        lo4, hi4 = lo.view(1, -1, 1, 1), hi.view(1, -1, 1, 1)
        sizes, logits = [], []
        for i in range(len(feats.eval_x)):
            x = feats.eval_x[i:i + 1]
            q = torch.maximum(torch.minimum(torch.round((x - mean) / (std * step)).int(), hi4), lo4)
            data = tables.encode(q.numpy())
            sizes.append(len(data))
            back = torch.from_numpy(tables.decode(data)).float() * std * step + mean
            logits.append(server(back))
        logits = torch.cat(logits)
        metric, agreement = _score(logits, feats)
        out.append(Baseline(f"uniform-q{step:g}@{feats.cut}", float(np.mean(sizes)), metric, agreement,
                            _kl(logits, feats)))
    return out
