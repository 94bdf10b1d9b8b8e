"""A learned, entropy-coded bottleneck at a cut (task-oriented communication).

::

    device:  x (N, Cx, H, W) --enc: 1x1 conv, ReLU6, 1x1 conv--> z (N, C, H, W) --round, clamp--> q (int32)
    link:    q --range coder with the learned per-channel tables--> bytes          (~ -log2 p(q) bits)
    server:  q --float--> dec: 1x1 conv, ReLU6, 1x1 conv --> x_hat (N, Cx, H, W) --> rest of the model

Training (``forward``) replaces rounding by additive uniform noise and returns the likelihoods
so the loss can charge the rate; ``device_module`` / ``server_module`` / ``pack`` / ``unpack``
are the same object's deployment path, so estimated rate and coded size cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from aiflow_cli.codecs.base import ActivationCodec, CodecSpec, EncodedTensor
from aiflow_cli.codecs.entropy import EntropyTables, FactorizedDensity

__all__ = ["BottleneckNet", "LearnedBottleneckCodec"]


class _LinearPlusMLP(nn.Module):
    """y = W x + MLP(x): the linear path starts as PCA, the MLP (last layer zero) learns what it misses."""

    def __init__(self, c_in: int, c_mid: int, c_out: int) -> None:
        super().__init__()
        self.linear = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.mlp = nn.Sequential(nn.Conv2d(c_in, c_mid, 1), nn.ReLU6(), nn.Conv2d(c_mid, c_out, 1))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.mlp(x)


class _Encoder(nn.Module):
    def __init__(self, c_in: int, c_mid: int, c_out: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, c_in, 1, 1))
        self.register_buffer("std", torch.ones(1, c_in, 1, 1))
        self.net = _LinearPlusMLP(c_in, c_mid, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


class _Decoder(nn.Module):
    def __init__(self, c_in: int, c_mid: int, c_out: int, encoder: _Encoder) -> None:
        super().__init__()
        self.net = _LinearPlusMLP(c_in, c_mid, c_out)
        self.encoder = [encoder]  # shares the standardisation buffers without registering twice

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        enc = self.encoder[0]
        return self.net(z) * enc.std + enc.mean


class BottleneckNet(nn.Module):
    def __init__(self, in_channels: int, channels: int, hidden: int = 256) -> None:
        super().__init__()
        self.in_channels, self.channels, self.hidden = in_channels, channels, hidden
        self.encoder = _Encoder(in_channels, hidden, channels)
        self.decoder = _Decoder(channels, hidden, in_channels, self.encoder)
        self.density = FactorizedDensity(channels)
        self.register_buffer("lo", torch.full((channels,), -64.0))
        self.register_buffer("hi", torch.full((channels,), 64.0))

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Inference: round and clamp to the coded support (what the device sends)."""
        lo, hi = self.lo.view(1, -1, 1, 1), self.hi.view(1, -1, 1, 1)
        return torch.maximum(torch.minimum(torch.round(z), hi), lo)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, likelihoods). Noise while training, rounding otherwise."""
        z = self.encoder(x)
        z_hat = z + torch.empty_like(z).uniform_(-0.5, 0.5) if self.training else self.quantize(z)
        return self.decoder(z_hat), self.density.likelihood(z_hat)

    @torch.no_grad()
    def init_from(self, x: torch.Tensor, latent_scale: float = 2.0) -> None:
        """Standardise with training statistics; start the linear paths as PCA (top ``channels``
        components, scaled so each latent has std ``latent_scale`` quantisation steps)."""
        mean, std = x.mean((0, 2, 3), keepdim=True), x.std((0, 2, 3), keepdim=True).clamp_min(1e-6)
        self.encoder.mean.copy_(mean)
        self.encoder.std.copy_(std)
        pixels = ((x - mean) / std).permute(0, 2, 3, 1).reshape(-1, self.in_channels)
        pixels = pixels[torch.randperm(len(pixels), generator=torch.Generator().manual_seed(0))[:20000]]
        _, sing, vh = torch.linalg.svd(pixels, full_matrices=False)
        comps = vh[: self.channels]  # (C, in)
        comp_std = sing[: self.channels] / len(pixels) ** 0.5
        scale = (latent_scale / comp_std).unsqueeze(1)
        self.encoder.net.linear.weight.copy_((comps * scale)[:, :, None, None])
        self.decoder.net.linear.weight.copy_((comps / scale).T[:, :, None, None])

    @torch.no_grad()
    def fit_support(self, latents: list[torch.Tensor], margin: int = 1) -> None:
        """Per-channel integer support from training latents (plus a margin); beyond it, values clamp."""
        q = torch.cat([torch.round(self.encoder(x)) for x in latents])
        self.lo.copy_(q.amin((0, 2, 3)) - margin)
        self.hi.copy_(q.amax((0, 2, 3)) + margin)


class _Encode(nn.Module):
    def __init__(self, net: BottleneckNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.quantize(self.net.encoder(x)).to(torch.int32)


class _Decode(nn.Module):
    def __init__(self, net: BottleneckNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return self.net.decoder(q.to(torch.float32))


class LearnedBottleneckCodec(ActivationCodec):
    name = "learned-bottleneck"
    wire_dtype = "int32"
    lossless = False

    def __init__(self, net: BottleneckNet, tables: EntropyTables | None = None) -> None:
        super().__init__(None)
        self.net = net.eval()
        self.tables = tables or net.density.tables(net.lo, net.hi)

    def device_module(self) -> nn.Module:
        return _Encode(self.net)

    def server_module(self) -> nn.Module:
        return _Decode(self.net)

    def pack(self, wire: np.ndarray) -> EncodedTensor:
        return EncodedTensor(self.tables.encode(wire), tuple(wire.shape), "int32")

    def unpack(self, enc: EncodedTensor) -> np.ndarray:
        return self.tables.decode(enc.data)

    def estimated_bytes(self, x: torch.Tensor) -> float:
        """-log2 p(q) / 8 under the learned density (the rate the training loss charged)."""
        with torch.no_grad():
            q = self.net.quantize(self.net.encoder(x))
            return float(-torch.log2(self.net.density.likelihood(q)).sum() / 8)

    def spec(self) -> CodecSpec:
        return CodecSpec(self.name, {
            "wire_dtype": "int32", "in_channels": self.net.in_channels, "channels": self.net.channels,
            "hidden": self.net.hidden, "coder": "constriction range coder (queue), categorical per channel",
            "header_bytes": 8, **self.tables.to_params(),
        })

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "LearnedBottleneckCodec":
        """Rebuild the coder side (tables) from a manifest; the networks live in the ONNX files."""
        net = BottleneckNet(params["in_channels"], params["channels"], params["hidden"])
        tables = EntropyTables.from_params(params)
        net.lo.copy_(torch.tensor(tables.lo, dtype=torch.float32))
        net.hi.copy_(torch.tensor(tables.hi, dtype=torch.float32))
        return cls(net, tables)

