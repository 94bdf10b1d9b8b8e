"""A learned, entropy-coded bottleneck at a cut (task-oriented communication).

::

    device:  x (N, Cx, H, W) --p x p blocks, analysis: 1x1 conv, gain--> z (N, C, H/p, W/p) --round--> q (int32)
    link:    q --range coder with the learned per-channel tables--> bytes          (~ -log2 p(q) bits)
    server:  q --synthesis: 1/gain, 1x1 conv, blocks back--> x_hat (N, Cx, H, W) --> rest of the model

Why linear transforms: the training split holds a few hundred images, too few for a deep
nonlinear transform to generalise; what the task needs is mostly *which directions* of the
activation matter to the output. ``init_task_aware`` starts the analysis transform as the
Karhunen-Loeve transform of the activation in the metric of the task's Fisher information (so a
uniform step in z costs the same expected KL in every direction, and directions the output
ignores fall below one step and cost almost no bits); training then tunes gains, transforms and
the density end to end on distortion + beta * rate.

Training (``forward``) replaces rounding by additive uniform noise and returns the likelihoods
so the loss can charge the rate; ``device_module`` / ``server_module`` / ``pack`` / ``unpack``
are the same object's deployment path, so estimated rate and coded size cannot drift apart.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aiflow_cli.codecs.base import ActivationCodec, CodecSpec, EncodedTensor
from aiflow_cli.codecs.entropy import HEADER_BYTES, EntropyTables, FactorizedDensity
from aiflow_cli.errors import ConfigError
from aiflow_cli.hashing import sha256_file

__all__ = ["BottleneckNet", "LearnedBottleneckCodec", "step_for_beta", "space_to_depth"]


def step_for_beta(beta: float) -> float:
    """Quantiser step (in Fisher-whitened units) where d(KL)/d(rate) = -beta at high rate.

    Per element, uniform noise of step s costs KL ~ s^2/24 nats and saves 1/ln2 bits per halving
    of s, so the slope is s^2 ln2 / 12; setting it to beta gives the step to start from.
    """
    return math.sqrt(12 * beta / math.log(2))


def space_to_depth(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C*p*p, ceil(H/p), ceil(W/p)), zero-padding the bottom and right edges."""
    if patch == 1:
        return x
    h, w = x.shape[-2:]
    x = nn.functional.pad(x, (0, (-w) % patch, 0, (-h) % patch))
    return nn.functional.pixel_unshuffle(x, patch)


class BottleneckNet(nn.Module):
    """Analysis / synthesis transforms over ``patch`` x ``patch`` blocks of the activation.

    With ``patch`` 2 the transform sees each 2x2 neighbourhood at once, so it can spend bits on
    what neighbouring positions do *not* share (the factorised density codes every latent on its
    own and cannot exploit that correlation by itself).
    """

    def __init__(self, in_channels: int, channels: int, patch: int = 1, size: tuple[int, int] = (0, 0)) -> None:
        super().__init__()
        self.in_channels, self.channels, self.patch, self.size = in_channels, channels, patch, tuple(size)
        block = in_channels * patch * patch
        self.analysis = nn.Conv2d(block, channels, 1)
        self.synthesis = nn.Conv2d(channels, block, 1)
        self.log_gain = nn.Parameter(torch.zeros(channels))
        self.density = FactorizedDensity(channels)
        self.register_buffer("mean", torch.zeros(1, in_channels, 1, 1))
        self.register_buffer("lo", torch.full((channels,), -64.0))
        self.register_buffer("hi", torch.full((channels,), 64.0))

    def blocks(self, x: torch.Tensor) -> torch.Tensor:
        """Centred activation as (N, Cx*p*p, H/p, W/p) blocks (what the transforms act on)."""
        return space_to_depth(x - self.mean, self.patch)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous latent z, one unit = one quantisation step."""
        return self.analysis(self.blocks(x)) * self.log_gain.exp().view(1, -1, 1, 1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        y = self.synthesis(z * (-self.log_gain).exp().view(1, -1, 1, 1))
        if self.patch > 1:
            y = nn.functional.pixel_shuffle(y, self.patch)[:, :, : self.size[0], : self.size[1]]
        return y + self.mean

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Inference: round and clamp to the coded support (what the device sends)."""
        lo, hi = self.lo.view(1, -1, 1, 1), self.hi.view(1, -1, 1, 1)
        return torch.maximum(torch.minimum(torch.round(z), hi), lo)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, likelihoods). Noise while training, rounding otherwise."""
        z = self.encode(x)
        z_hat = z + torch.empty_like(z).uniform_(-0.5, 0.5) if self.training else self.quantize(z)
        return self.decode(z_hat), self.density.likelihood(z_hat)

    @torch.no_grad()
    def init_task_aware(self, x: torch.Tensor, fisher: torch.Tensor, step: float) -> None:
        """Analysis = KLT of the activation blocks after whitening by the task's Fisher information.

        ``fisher`` (D, D), D = Cx*p*p: expected outer product of d log p(y|x)/dx per block (see
        ``space_to_depth``), summed over the blocks of one input. With M^T M = fisher,
        KL ~ |M e|^2 / 2 for a small error e, so in y = M x all directions are equally important;
        the KLT of y sorts them by variance and the ``channels`` strongest are kept. ``step`` sets
        the quantiser step in y.
        """
        self.size = tuple(x.shape[-2:])
        self.mean.copy_(x.mean((0, 2, 3), keepdim=True))
        d = self.analysis.in_channels
        pixels = self.blocks(x).permute(0, 2, 3, 1).reshape(-1, d).double()
        pixels = pixels[torch.randperm(len(pixels), generator=torch.Generator().manual_seed(0))[:50000]]
        lam, u = torch.linalg.eigh(fisher.double())
        lam = lam.clamp_min(float(lam.max()) * 1e-6)
        whiten = (u * lam.sqrt()).T  # y = whiten @ x
        y = pixels @ whiten.T
        var, v = torch.linalg.eigh(y.T @ y / len(y))
        keep = v[:, torch.argsort(var, descending=True)[: self.channels]]  # (D, C)
        analysis = keep.T @ whiten / step  # (C, D)
        synthesis = torch.linalg.pinv(whiten) @ keep * step  # (D, C)
        self.analysis.weight.copy_(analysis.float()[:, :, None, None])
        self.analysis.bias.zero_()
        self.synthesis.weight.copy_(synthesis.float()[:, :, None, None])
        self.synthesis.bias.zero_()
        self.log_gain.zero_()

    @torch.no_grad()
    def fit_support(self, latents: list[torch.Tensor], margin: int = 1) -> None:
        """Per-channel integer support from training latents (plus a margin); beyond it, values clamp."""
        q = torch.cat([torch.round(self.encode(x)) for x in latents])
        self.lo.copy_(q.amin((0, 2, 3)) - margin)
        self.hi.copy_(q.amax((0, 2, 3)) + margin)


class _Encode(nn.Module):
    """(N, C, H, W) activation -> int32 symbols; a (B, T, D) sequence is coded token by token
    (each token a (D, 1, 1) input) and comes out as (B, T, C)."""

    def __init__(self, net: BottleneckNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            b, t, d = x.shape
            q = self.net.quantize(self.net.encode(x.reshape(-1, d)[:, :, None, None]))
            return q.reshape(b, t, self.net.channels).to(torch.int32)
        return self.net.quantize(self.net.encode(x)).to(torch.int32)


class _Decode(nn.Module):
    def __init__(self, net: BottleneckNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        if q.dim() == 3:
            b, t, c = q.shape
            x = self.net.decode(q.reshape(-1, c)[:, :, None, None].to(torch.float32))
            return x.reshape(b, t, self.net.in_channels)
        return self.net.decode(q.to(torch.float32))


class LearnedBottleneckCodec(ActivationCodec):
    name = "learned-bottleneck"
    wire_dtype = "int32"
    lossless = False

    weights_file = "bottleneck.safetensors"

    def __init__(self, net: BottleneckNet, tables: EntropyTables | None = None, weights_sha256: str | None = None
                 ) -> None:
        super().__init__(None)
        self.net = net.eval()
        self.tables = tables or net.density.tables(net.lo, net.hi)
        self.weights_sha256 = weights_sha256

    def write_weights(self, pair_dir: Path) -> None:
        """Save the trained networks beside the pair, so ``split verify`` can rebuild the training graph."""
        from safetensors.torch import save_file

        path = Path(pair_dir) / self.weights_file
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(path))
        self.weights_sha256 = sha256_file(path)

    @staticmethod
    def load_net(params: dict[str, Any], pair_dir: Path) -> BottleneckNet:
        """The training graph's networks from the export directory (refused if the hash differs)."""
        from safetensors.torch import load_file

        path = Path(pair_dir) / params["weights_file"]
        if not path.is_file() or sha256_file(path) != params["weights_sha256"]:
            raise ConfigError(f"{path}: missing or not the file the manifest names (sha256 differs)",
                              "re-export the pair with aiflow split --bottleneck --export DIR --force")
        net = BottleneckNet(params["in_channels"], params["channels"], params.get("patch", 1),
                            tuple(params.get("size", (0, 0))))
        net.load_state_dict(load_file(str(path)))
        return net.eval()

    def device_module(self) -> nn.Module:
        return _Encode(self.net)

    def server_module(self) -> nn.Module:
        return _Decode(self.net)

    def pack(self, wire: np.ndarray) -> EncodedTensor:
        """One message; token symbols (B, T, C) travel as B*T inputs of shape (C, 1, 1)."""
        coded = wire if wire.ndim == 4 else wire.reshape(-1, wire.shape[-1], 1, 1)
        return EncodedTensor(self.tables.encode(coded), tuple(wire.shape), "int32")

    def unpack(self, enc: EncodedTensor) -> np.ndarray:
        return self.tables.decode(enc.data).reshape(enc.shape)

    def estimated_bytes(self, x: torch.Tensor) -> float:
        """-log2 p(q) / 8 under the coded tables (the rate the range coder should reach)."""
        with torch.no_grad():
            q = self.net.quantize(self.net.encode(x)).to(torch.int64).numpy()
        return self.tables.bits(q) / 8

    def spec(self) -> CodecSpec:
        return CodecSpec(self.name, {
            "wire_dtype": "int32", "in_channels": self.net.in_channels, "channels": self.net.channels,
            "patch": self.net.patch, "size": list(self.net.size),
            "coder": "constriction range coder (queue), categorical per channel",
            "header_bytes": HEADER_BYTES, **self.tables.to_params(),
            **({"weights_file": self.weights_file, "weights_sha256": self.weights_sha256} if self.weights_sha256 else {}),
        })

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "LearnedBottleneckCodec":
        """Rebuild the coder side (tables) from a manifest; the networks live in the ONNX files."""
        net = BottleneckNet(params["in_channels"], params["channels"], params.get("patch", 1),
                            tuple(params.get("size", (0, 0))))
        tables = EntropyTables.from_params(params)
        net.lo.copy_(torch.tensor(tables.lo, dtype=torch.float32))
        net.hi.copy_(torch.tensor(tables.hi, dtype=torch.float32))
        return cls(net, tables)
