"""Train a bottleneck at a cut: loss = distortion + beta * rate (the information-bottleneck trade).

    D = KL(p_unsplit(y|x) || p_split(y|x))     (distil the unsplit model's output distribution)
    R = -log2 p(z~) summed over the latent, in bits per input
    L = D + beta * R

Four stages, all on cached training-split features (augmented views included) with the
backbone frozen:

1. task-aware start: the Fisher information of the server half's output with respect to the
   activation (labels sampled from the model's own prediction) whitens the activation, and its
   KLT becomes the analysis transform, with the step ``step_for_beta(beta)``;
2. the density learns the latents' distribution (noise in place of rounding);
3. gains, transforms and density (optionally the server half) tune end to end on D + beta * R,
   with early stopping: after every epoch the loss is measured on the validation part (rounding,
   not noise) and the best epoch's state is kept;
4. with everything else fixed, the server's reconstruction offsets (``BottleneckNet.dequantize``)
   fit the KL on the training inputs' *rounded* latents, kept only where the validation loss
   falls. The bytes do not change (the device's graph and the tables are untouched). Measured at
   block15 of EfficientNet-Lite0 (docs/benchmarks.md, *Current codec*): test KL 0.0590 -> 0.0222
   at 687 B (beta 2e-5), 0.0317 -> 0.0151 at 847 B, 0.0147 -> 0.0095 at 1,095 B and 0.0087 ->
   0.0071 at 1,318 B; at block14 0.86x-0.92x, at block12 no change; 12-14 s a point.

Why the transforms stay linear by default: a residual non-linear analysis/synthesis (two 3x3
convolutions each, zero-initialised, so training starts at the linear solution) was tried on
5,514 training inputs (1,838 images and mirrors + 3,676 augmented views) at block13: its
validation loss beat the linear codec's only after the first epoch (0.3045 against 0.3127) and
then rose every epoch (0.35 to 0.38) while the training rate kept falling, and the early-stopped
point was no better on test agreement at equal bytes (903 B at 0.902 against the linear curve's
~900 B at 0.902). Too few images for it to generalise; the knob stays
(``transform_learning_rate``).
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

from aiflow_cli.codecs.learned import (
    BottleneckNet,
    LearnedBottleneckCodec,
    block_kinds,
    space_to_depth,
    step_for_beta,
)
from aiflow_cli.schemas.bottleneck import Scores
from aiflow_cli.split.bottleneck.defaults import AUGMENT, EPOCHS, PATCH, SHRINKAGE
from aiflow_cli.split.bottleneck.features import CutFeatures, SplitFeatures
from aiflow_cli.split.bottleneck.scoring import score_logits

__all__ = ["TrainSettings", "CodecRate", "TrainedPoint", "train_bottleneck", "evaluate_codec", "task_fisher",
           "validation_loss", "deployed_scores", "fit_reconstruction"]

Progress = Callable[[str, int, int], None]


@dataclass
class TrainSettings:
    channels: int | None = None  # latent channels; None keeps one per input dimension of a block
    # the transforms see patch x patch blocks (1: every position on its own). Measured on
    # EfficientNet-Lite0's 7x7 cuts: 2 sends 0.73-0.78x the bytes of 1 at the same beta; once blocks
    # over the odd edge had their own transforms, 3 beat 2 on validation loss (KL + beta x bits) at
    # beta 2e-5 at blocks 12, 13 and 14 (0.1727/0.1784/0.1951 against 0.1784/0.1860/0.2038)
    patch: int = PATCH
    augment: int = AUGMENT  # augmented views (random resized crops, flips) per training image, added to the codec's data
    # (measured at block13: no lower test drop at patch 1 or 2, 2-3x the training time; the knob stays)
    epochs: int = EPOCHS
    batch_size: int = 32
    learning_rate: float = 1e-2  # gains and density
    transform_learning_rate: float = 0.0  # analysis / synthesis stay at the task-aware KLT: tuning them on a few hundred images overfits
    density_warmup_steps: int = 300
    fisher_samples: int = 4
    # pull the KLT's covariance and the Fisher information toward their diagonals: a 3x3 block of
    # a 192-channel cut has 1,728 dimensions, estimated from a few thousand blocks. Measured at
    # block12, beta 1e-5 (validation loss, KL + beta x bits): 0.1111 at 0, 0.1076 at 0.2, 0.1124 at
    # 0.5; and the training inputs' KL, 0.77x unseen images' at 0, moved to 0.89x at 0.2
    shrinkage: float = SHRINKAGE
    reconstruction_epochs: int = 2  # stage 4, the server's offsets for rounded symbols (0: none, q stays q)
    reconstruction_inputs: int = 512  # training inputs stage 4 draws (three numbers need few; the tail's backward is slow)
    finetune_server: bool = False
    server_learning_rate: float = 1e-5  # with finetune_server: the server half's weights
    seed: int = 0


@dataclass
class CodecRate:
    """A codec's bytes and scores on one part of the data (each input coded on its own)."""

    bytes_per_input: float  # coded, header included
    estimated_bytes_per_input: float  # -log2 p(q) / 8 under the coded tables, header excluded
    scores: Scores
    pred: torch.Tensor  # (N,) the split model's top-1 per input


@dataclass
class TrainedPoint:
    beta: float
    codec: LearnedBottleneckCodec
    server: nn.Module
    validation: CodecRate
    test: CodecRate
    seconds: float
    selection: Scores | None = None  # training inputs and validation together (see CutFeatures.selection)


def _kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True, reduction="batchmean")


def task_fisher(server: nn.Module, x: torch.Tensor, samples: int = 4, batch: int = 50, seed: int = 0,
                patch: int = 1) -> torch.Tensor:
    """(K, D, D), D = C*patch^2, one per kind of block (:func:`block_kinds`; K = 1 when every
    block is whole): E over inputs of sum over blocks of g g^T, g = d log p(y~|x) / dx over one
    patch x patch block (``space_to_depth``).

    A kind's matrix is the mean over its blocks times the number of blocks, so the quantiser step
    means the same expected KL in every kind (the blocks near an edge matter less to the output
    and get coarser steps). y~ is drawn from the model's own prediction, so this is the Fisher
    information (the Hessian of the KL to the unsplit output), not the empirical Fisher of the labels.
    """
    gen = torch.Generator().manual_seed(seed)
    c = x.shape[1] * patch * patch
    kind_map = torch.tensor(block_kinds(tuple(x.shape[-2:]), patch)[0]).reshape(-1)
    kinds = int(kind_map.max()) + 1
    fisher = torch.zeros(kinds, c, c, dtype=torch.float64)
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].clone().requires_grad_(True)
        logp = F.log_softmax(server(xb), -1)
        probs = logp.detach().exp()
        for s in range(samples):
            y = torch.multinomial(probs, 1, generator=gen)
            (g,) = torch.autograd.grad(logp.gather(1, y).sum(), xb, retain_graph=s < samples - 1)
            gp = space_to_depth(g, patch).flatten(2).double()  # (n, D, P)
            for k in range(kinds):
                gk = gp[:, :, kind_map == k].permute(0, 2, 1).reshape(-1, c)
                fisher[k] += gk.T @ gk
    counts = torch.bincount(kind_map, minlength=kinds).double()
    return fisher * (len(kind_map) / counts).view(-1, 1, 1) / (len(x) * samples)


@torch.no_grad()
def validation_loss(net: BottleneckNet, server: nn.Module, part: SplitFeatures, beta: float) -> float:
    """KL + beta x rate on held-out inputs, with rounding as deployed (the early-stopping criterion)."""
    was_training = net.training
    net.eval()
    total = 0.0
    for i in range(0, len(part), 100):
        x_hat, lik = net(part.x[i:i + 100])
        total += float(_kl(server(x_hat), part.logits[i:i + 100])) * len(x_hat) + beta * float(-torch.log2(lik).sum())
    net.train(was_training)
    return total / len(part)


def _batches(n: int, size: int):
    order = torch.randperm(n)
    for i in range(0, n, size):
        yield order[i:i + size]


def train_bottleneck(server: nn.Module, feats: CutFeatures, beta: float, settings: TrainSettings,
                     progress: Progress | None = None, fisher: torch.Tensor | None = None) -> TrainedPoint:
    """One bottleneck for one beta. Pass ``fisher`` to share it between the betas of one cut."""
    torch.manual_seed(settings.seed)
    t0 = time.perf_counter()
    server = copy.deepcopy(server).eval()
    for p in server.parameters():
        p.requires_grad_(False)
    x_train, logits_train = feats.codec_training()
    n = len(x_train)
    if fisher is None:
        fisher = task_fisher(server, x_train, settings.fisher_samples, seed=settings.seed, patch=settings.patch)
    block = x_train.shape[1] * settings.patch ** 2
    net = BottleneckNet(x_train.shape[1], settings.channels or block, settings.patch)
    net.init_task_aware(x_train, fisher, step_for_beta(beta), settings.shrinkage)
    steps_per_epoch = (n + settings.batch_size - 1) // settings.batch_size
    total = settings.density_warmup_steps + settings.epochs * steps_per_epoch
    label = f"beta {beta:g}"

    with torch.no_grad():
        latents = torch.cat([net.encode(x_train[i:i + 100]) for i in range(0, n, 100)])
    opt = torch.optim.Adam(net.density_parameters(), lr=settings.learning_rate)
    for step in range(settings.density_warmup_steps):
        z = latents[torch.randint(0, n, (settings.batch_size,))]
        rate = -torch.log2(net.likelihood(z + torch.empty_like(z).uniform_(-0.5, 0.5))).sum()
        opt.zero_grad(set_to_none=True)
        (rate / settings.batch_size).backward()
        opt.step()
        if progress:
            progress(label, step + 1, total)

    groups = [{"params": [*net.gain_parameters(), *net.density_parameters()], "lr": settings.learning_rate},
              {"params": net.transform_parameters(),
               "lr": settings.transform_learning_rate}]
    if settings.finetune_server:
        for p in server.parameters():
            p.requires_grad_(True)
        groups.append({"params": list(server.parameters()), "lr": settings.server_learning_rate})
    opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, settings.epochs * steps_per_epoch))
    step = settings.density_warmup_steps
    best = (validation_loss(net, server, feats.validation, beta), copy.deepcopy(net.state_dict()),
            copy.deepcopy(server.state_dict()) if settings.finetune_server else None)
    for _ in range(settings.epochs):
        net.train()
        for idx in _batches(n, settings.batch_size):
            x_hat, lik = net(x_train[idx])
            rate = -torch.log2(lik).sum() / len(idx)
            loss = _kl(server(x_hat), logits_train[idx]) + beta * rate
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if progress:
                progress(label, step, total)
        loss = validation_loss(net, server, feats.validation, beta)
        if loss < best[0]:
            best = (loss, copy.deepcopy(net.state_dict()),
                    copy.deepcopy(server.state_dict()) if settings.finetune_server else None)
    net.load_state_dict(best[1])
    if best[2] is not None:
        server.load_state_dict(best[2])
    net.eval()
    server.eval()
    for p in server.parameters():
        p.requires_grad_(False)
    net.fit_support([x_train[i:i + 100] for i in range(0, n, 100)])
    fit_reconstruction(net, server, x_train, logits_train, feats.validation, beta, settings)
    codec = LearnedBottleneckCodec(net)
    return TrainedPoint(beta=beta, codec=codec, server=server, validation=evaluate_codec(codec, server, feats.validation),
                        test=evaluate_codec(codec, server, feats.test), seconds=time.perf_counter() - t0,
                        selection=deployed_scores(codec, server, feats.selection))


def fit_reconstruction(net: BottleneckNet, server: nn.Module, x: torch.Tensor, logits: torch.Tensor,
                       validation: SplitFeatures, beta: float, settings: TrainSettings) -> None:
    """Fit ``net.reconstruction`` (where the server puts q = +-1, +-2, +-3 and beyond) on the KL
    of rounded latents, as deployed; keep the offsets only if the validation loss falls.

    Only the server's side moves: the symbols, and so the bytes, stay what they were. Three
    numbers shared by every channel, fitted on ``settings.reconstruction_inputs`` inputs, cannot
    learn the images.
    """
    if settings.reconstruction_epochs <= 0:
        return
    gen = torch.Generator().manual_seed(settings.seed)
    pick = torch.randperm(len(x), generator=gen)[:settings.reconstruction_inputs]
    x, logits = x[pick], logits[pick]
    with torch.no_grad():
        symbols = torch.cat([net.quantize(net.encode(x[i:i + 100])) for i in range(0, len(x), 100)])
    start = net.reconstruction.detach().clone()
    before = validation_loss(net, server, validation, beta)
    opt = torch.optim.Adam([net.reconstruction], lr=settings.learning_rate)
    for _ in range(settings.reconstruction_epochs):
        for idx in torch.randperm(len(x), generator=gen).split(2 * settings.batch_size):
            loss = _kl(server(net.reconstruct(symbols[idx])), logits[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward(inputs=[net.reconstruction])  # the transforms' gradients are never needed here
            opt.step()
    if validation_loss(net, server, validation, beta) >= before:
        with torch.no_grad():
            net.reconstruction.copy_(start)


@torch.no_grad()
def deployed_scores(codec: LearnedBottleneckCodec, server: nn.Module, part: SplitFeatures) -> Scores:
    """Scores through the deployed path (rounding and clamping, as the device sends them), in
    batches and without the range coder: lossless, so the predictions are the same, and a choice
    needs no byte counts from these inputs."""
    encode, decode = codec.device_module(), codec.server_module()
    logits = torch.cat([server(decode(encode(part.x[i:i + 100]))) for i in range(0, len(part), 100)])
    return score_logits(logits, part)


@torch.no_grad()
def evaluate_codec(codec: LearnedBottleneckCodec, server: nn.Module, part: SplitFeatures) -> CodecRate:
    """Coded bytes per input (each input coded on its own, as it would be sent), estimated bytes, scores."""
    coded, estimated, preds = [], [], []
    encode, decode = codec.device_module(), codec.server_module()
    for i in range(len(part)):
        wire = encode(part.x[i:i + 1]).numpy()
        data = codec.pack(wire)
        coded.append(len(data.data))
        estimated.append(codec.tables.bits(wire) / 8)
        preds.append(server(decode(torch.from_numpy(codec.unpack(data)))))
    logits = torch.cat(preds)
    return CodecRate(float(np.mean(coded)), float(np.mean(estimated)), score_logits(logits, part), logits.argmax(-1))
