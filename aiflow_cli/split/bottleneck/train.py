"""Train a bottleneck at a cut: loss = distortion + beta * rate (the information-bottleneck trade).

    D = KL(p_unsplit(y|x) || p_split(y|x))     (distil the unsplit model's output distribution)
    R = -log2 p(z~) summed over the latent, in bits per input
    L = D + beta * R

The backbone on both sides stays frozen (optionally the server half is tuned too); only the
encoder, decoder and density learn, on cached training-split features.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from aiflow_cli.codecs.learned import BottleneckNet, LearnedBottleneckCodec
from aiflow_cli.split.bottleneck.features import CutFeatures

__all__ = ["TrainSettings", "TrainedPoint", "train_bottleneck", "evaluate_codec_on_features"]


@dataclass
class TrainSettings:
    channels: int = 16
    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 2e-3
    finetune_server: bool = False
    seed: int = 0


@dataclass
class TrainedPoint:
    beta: float
    codec: LearnedBottleneckCodec
    server: nn.Module
    bytes_per_input: float  # coded, header included
    estimated_bytes_per_input: float
    metric: float  # top-1 on the evaluation split
    agreement: float  # top-1 agreement with the unsplit model
    seconds: float


def _kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True, reduction="batchmean")


def train_bottleneck(server: nn.Module, feats: CutFeatures, beta: float, settings: TrainSettings,
                     progress: Callable[[str, int, int], None] | None = None) -> TrainedPoint:
    torch.manual_seed(settings.seed)
    t0 = time.perf_counter()
    server = copy.deepcopy(server).eval()
    for p in server.parameters():
        p.requires_grad_(settings.finetune_server)
    net = BottleneckNet(feats.train_x.shape[1], settings.channels)
    net.init_from(feats.train_x)
    params = list(net.parameters()) + ([p for p in server.parameters()] if settings.finetune_server else [])
    opt = torch.optim.Adam(params, lr=settings.learning_rate)
    n = len(feats.train_x)
    steps_per_epoch = (n + settings.batch_size - 1) // settings.batch_size
    total = settings.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    step = 0
    for _ in range(settings.epochs):
        net.train()
        order = torch.randperm(n)
        for i in range(0, n, settings.batch_size):
            idx = order[i:i + settings.batch_size]
            x_hat, lik = net(feats.train_x[idx])
            logits = server(x_hat)
            rate = -torch.log2(lik).sum() / len(idx)
            loss = _kl(logits, feats.train_logits[idx]) + beta * rate
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if progress:
                progress(f"beta {beta:g}", step, total)
    net.eval()
    server.eval()
    net.fit_support([feats.train_x[i:i + 100] for i in range(0, n, 100)])
    codec = LearnedBottleneckCodec(net)
    point = evaluate_codec_on_features(codec, server, feats)
    return TrainedPoint(beta=beta, codec=codec, server=server, seconds=time.perf_counter() - t0, **point)


@torch.no_grad()
def evaluate_codec_on_features(codec: LearnedBottleneckCodec, server: nn.Module, feats: CutFeatures) -> dict:
    """Coded bytes per input (each image coded on its own), estimated bytes, top-1, agreement."""
    coded, estimated, preds = [], [], []
    encode, decode = codec.device_module(), codec.server_module()
    for i in range(len(feats.eval_x)):
        x = feats.eval_x[i:i + 1]
        wire = encode(x).numpy()
        data = codec.pack(wire)
        coded.append(len(data.data))
        estimated.append(codec.estimated_bytes(x))
        back = torch.from_numpy(codec.unpack(data))
        preds.append(server(decode(back)).argmax(-1))
    pred = torch.cat(preds)
    return {"bytes_per_input": float(np.mean(coded)), "estimated_bytes_per_input": float(np.mean(estimated)),
            "metric": float((pred == feats.eval_labels).float().mean()),
            "agreement": float((pred == feats.eval_logits.argmax(-1)).float().mean())}
