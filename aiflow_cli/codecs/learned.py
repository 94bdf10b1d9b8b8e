"""A learned, entropy-coded bottleneck at a cut (task-oriented communication).

::

    device:  x (N, Cx, H, W) --p x p blocks, analysis (per kind of block), gain--> z (N, C, H/p, W/p) --round--> q (int32)
    link:    q --range coder with the learned tables (per kind, per channel)--> bytes   (~ -log2 p(q) bits)
    server:  q --dequantize (+- offset by |q|)--> synthesis: 1/gain, per kind, blocks back--> x_hat (N, Cx, H, W)
             --> rest of the model

Why linear transforms: the training split holds a few hundred images, too few for a deep
nonlinear transform to generalise; what the task needs is mostly *which directions* of the
activation matter to the output. ``init_task_aware`` starts the analysis transform as the
Karhunen-Loeve transform of the activation in the metric of the task's Fisher information (so a
uniform step in z costs the same expected KL in every direction, and directions the output
ignores fall below one step and cost almost no bits); training then tunes gains, transforms and
the density end to end on distortion + beta * rate.

Training (``forward``) replaces rounding by additive uniform noise and returns the likelihoods
so the loss can charge the rate; the noise cannot teach the server where a rounded value should
land, so ``dequantize`` moves nonzero symbols by offsets fitted afterwards on rounded latents
(see ``RECONSTRUCTION_LEVELS``); ``device_module`` / ``server_module`` / ``pack`` / ``unpack``
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

__all__ = ["BottleneckNet", "BlockKind", "LearnedBottleneckCodec", "RECONSTRUCTION_LEVELS", "block_kinds",
           "step_for_beta", "space_to_depth"]

# Offsets for |q| = 1, 2 and >= 3 (one each, shared by every channel). Why learned and not the
# centroid: at block15 of EfficientNet-Lite0 (beta 1e-5) the nonzero latents sit at 0.71 steps
# on average, yet moving them there raised the KL tenfold (0.015 to 0.157); the rest of the model
# wants the activation's energy kept, and zeroing the dead zone already removed some. Fitted on
# KL instead, they come out *outward* there (+0.015 to +0.10 of a step) and cut the KL at the same
# bytes to 0.38-0.82x (inward at block14, 0.86-0.92x). One offset per channel fitted no better
# (test KL 0.0094 against 0.0093).
RECONSTRUCTION_LEVELS = 3


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


def block_kinds(size: tuple[int, int], patch: int) -> tuple[list[list[int]], list[tuple[int, ...]]]:
    """Which positions of a ``patch`` x ``patch`` block are inside an activation of ``size``.

    Returns (kind map over the block grid, the real offsets ``i * patch + j`` of each kind). With
    an odd size the last row and column of blocks are part zero-padding: coding those blocks with
    the full block's transform would spend bits on directions that only reach the padding, so
    every kind of block gets its own transform over its real positions. Kinds are numbered in
    raster order of first appearance (kind 0: the full block, when there is one).
    """
    h, w = size
    grid_h, grid_w = -(-h // patch), -(-w // patch)
    kinds: list[tuple[int, ...]] = []
    kind_map = []
    for bh in range(grid_h):
        row = []
        for bw in range(grid_w):
            real = tuple(i * patch + j for i in range(patch) for j in range(patch)
                         if bh * patch + i < h and bw * patch + j < w)
            if real not in kinds:
                kinds.append(real)
            row.append(kinds.index(real))
        kind_map.append(row)
    return kind_map, kinds


class BlockKind(nn.Module):
    """The transforms, gains and density of one kind of block (see :func:`block_kinds`).

    ``analysis`` is (C_k, D) and ``synthesis`` (D, C_k) over the whole block vector; the columns
    and rows of padded positions are zero (their inputs are zero and their outputs are cropped,
    so training never moves them), and C_k <= the number of real dimensions.
    """

    def __init__(self, block: int, channels: int, positions: list[int]) -> None:
        super().__init__()
        self.channels = channels
        self.analysis = nn.Parameter(torch.zeros(channels, block))
        self.analysis_bias = nn.Parameter(torch.zeros(channels))
        self.synthesis = nn.Parameter(torch.zeros(block, channels))
        self.synthesis_bias = nn.Parameter(torch.zeros(block))
        self.log_gain = nn.Parameter(torch.zeros(channels))
        self.density = FactorizedDensity(channels)
        self.register_buffer("positions", torch.tensor(positions, dtype=torch.long))


class BottleneckNet(nn.Module):
    """Analysis / synthesis transforms over ``patch`` x ``patch`` blocks of the activation.

    With ``patch`` 2 the transform sees each 2x2 neighbourhood at once, so it can spend bits on
    what neighbouring positions do *not* share (the factorised density codes every latent on its
    own and cannot exploit that correlation by itself). Blocks that hang over an odd edge have
    their own transform and density (:class:`BlockKind`); the wire stays (N, C, H/p, W/p), with
    the channels a smaller kind does not use held at zero and never coded. Measured at block12 of
    EfficientNet-Lite0 (7x7, so 7 of its 16 blocks are part padding): 0.80x the bytes of one
    shared transform at the same KL.
    """

    def __init__(self, in_channels: int, channels: int, patch: int = 1, size: tuple[int, int] = (0, 0)) -> None:
        super().__init__()
        self.in_channels, self.channels, self.patch = in_channels, channels, patch
        self.block = in_channels * patch * patch
        self.register_buffer("mean", torch.zeros(1, in_channels, 1, 1))
        self.reconstruction = nn.Parameter(torch.zeros(RECONSTRUCTION_LEVELS))
        self._build(tuple(size))

    def _build(self, size: tuple[int, int]) -> None:
        """(Re)create the block kinds for an activation of ``size`` ((0, 0): not known yet)."""
        self.size = tuple(size)
        self.kind_map, self.kind_offsets = block_kinds(self.size, self.patch) if all(self.size) else ([], [])
        grid = [k for row in self.kind_map for k in row]
        kinds, order = [], []
        for k, offsets in enumerate(self.kind_offsets):
            positions = [i for i, kind in enumerate(grid) if kind == k]
            kinds.append(BlockKind(self.block, min(self.channels, self.in_channels * len(offsets)), positions))
            order += positions
        self.kinds = nn.ModuleList(kinds)
        # position i of the concatenated kinds holds grid position order[i]; ``restore`` undoes it
        self.register_buffer("restore", torch.argsort(torch.tensor(order, dtype=torch.long)))
        grid_shape = (self.channels, len(self.kind_map), len(self.kind_map[0]) if self.kind_map else 0)
        self.register_buffer("lo", torch.zeros(grid_shape))
        self.register_buffer("hi", torch.zeros(grid_shape))

    @property
    def single_kind(self) -> bool:
        return len(self.kinds) == 1

    def blocks(self, x: torch.Tensor) -> torch.Tensor:
        """Centred activation as (N, Cx*p*p, H/p, W/p) blocks (what the transforms act on)."""
        return space_to_depth(x - self.mean, self.patch)

    def _per_kind(self, t: torch.Tensor) -> list[torch.Tensor]:
        """(N, C, H', W') -> per kind (N, C, P_k): the grid positions of that kind."""
        flat = t.flatten(2)
        return [flat if self.single_kind else flat.index_select(2, k.positions) for k in self.kinds]

    def _from_kinds(self, parts: list[torch.Tensor], channels: int) -> torch.Tensor:
        """Per kind (N, channels, P_k) -> (N, channels, H', W') in grid order."""
        flat = parts[0] if self.single_kind else torch.cat(parts, 2).index_select(2, self.restore)
        return flat.reshape(-1, channels, len(self.kind_map), len(self.kind_map[0]))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous latent z (N, C, H', W'), one unit = one quantisation step."""
        parts = []
        for k, b in zip(self.kinds, self._per_kind(self.blocks(x))):
            z = (torch.matmul(k.analysis, b) + k.analysis_bias[:, None]) * k.log_gain.exp()[:, None]
            parts.append(nn.functional.pad(z, (0, 0, 0, self.channels - k.channels)) if k.channels < self.channels else z)
        return self._from_kinds(parts, self.channels)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        parts = []
        for k, zk in zip(self.kinds, self._per_kind(z)):
            zk = zk[:, :k.channels] * (-k.log_gain).exp()[:, None]
            parts.append(torch.matmul(k.synthesis, zk) + k.synthesis_bias[:, None])
        y = self._from_kinds(parts, self.block)
        if self.patch > 1:
            y = nn.functional.pixel_shuffle(y, self.patch)[:, :, : self.size[0], : self.size[1]]
        return y + self.mean

    def dequantize(self, q: torch.Tensor) -> torch.Tensor:
        """Where the server puts a rounded symbol: q + sign(q) * offset(|q|) (0 stays 0).

        Rounding is not the training's noise: it zeroes the dead zone and snaps the rest to the
        grid, and the offsets, fitted on rounded latents against the task
        (``train.fit_reconstruction``), put back what that costs the output. Zero offsets (a
        codec trained without them) leave q as it is.
        """
        size = q.abs()
        offset = self.reconstruction[-1] * (size >= RECONSTRUCTION_LEVELS).to(q.dtype)
        for level in range(1, RECONSTRUCTION_LEVELS):
            offset = offset + self.reconstruction[level - 1] * (size == level).to(q.dtype)
        return q + torch.sign(q) * offset

    def reconstruct(self, q: torch.Tensor) -> torch.Tensor:
        """The server's side: symbols -> activation (dequantize, then synthesis)."""
        return self.decode(self.dequantize(q))

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Inference: round and clamp to the coded support (what the device sends; unused channels are 0)."""
        return torch.maximum(torch.minimum(torch.round(z), self.hi), self.lo)

    def likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """(N, M): the density of every coded latent (each kind's own channels and positions)."""
        out = []
        for k, zk in zip(self.kinds, self._per_kind(z)):
            out.append(k.density.likelihood(zk[:, :k.channels, :, None]).flatten(1))
        return out[0] if self.single_kind else torch.cat(out, 1)

    def density_parameters(self) -> list[nn.Parameter]:
        return [p for k in self.kinds for p in k.density.parameters()]

    def gain_parameters(self) -> list[nn.Parameter]:
        return [k.log_gain for k in self.kinds]

    def transform_parameters(self) -> list[nn.Parameter]:
        return [p for k in self.kinds for p in (k.analysis, k.analysis_bias, k.synthesis, k.synthesis_bias)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, likelihoods). Noise while training, rounding (and dequantize) otherwise."""
        z = self.encode(x)
        if self.training:
            z_hat = z + torch.empty_like(z).uniform_(-0.5, 0.5)
            return self.decode(z_hat), self.likelihood(z_hat)
        q = self.quantize(z)
        return self.reconstruct(q), self.likelihood(q)

    @torch.no_grad()
    def init_task_aware(self, x: torch.Tensor, fisher: torch.Tensor, step: float, shrinkage: float = 0.0) -> None:
        """Analysis = KLT of the activation blocks after whitening by the task's Fisher information.

        ``fisher`` (D, D) or one (D, D) per kind of block (K, D, D), D = Cx*p*p: expected outer
        product of d log p(y|x)/dx per block (see ``space_to_depth``), summed over the blocks of
        one input. With M^T M = fisher, KL ~ |M e|^2 / 2 for a small error e, so in y = M x all
        directions are equally important; the KLT of y sorts them by variance and the strongest
        are kept. ``step`` sets the quantiser step in y. Each kind of block uses only its real
        dimensions, its own blocks and its own Fisher information.

        ``shrinkage`` in [0, 1] pulls both estimated matrices toward their diagonals (Ledoit-Wolf
        style): a 3x3 block of a 192-channel cut has 1,728 dimensions, estimated from a few
        thousand blocks, and the off-diagonal noise fits the training images, not new ones.
        """
        self._build(tuple(x.shape[-2:]))
        self.mean.copy_(x.mean((0, 2, 3), keepdim=True))
        blocks = self.blocks(x).flatten(2)
        for index, (k, real) in enumerate(zip(self.kinds, self.kind_offsets)):
            dims = torch.tensor([c * self.patch ** 2 + o for c in range(self.in_channels) for o in real])
            f = fisher[index] if fisher.dim() == 3 else fisher
            f = _shrink(f.double()[dims][:, dims], shrinkage)
            pixels = blocks.index_select(2, k.positions).permute(0, 2, 1).reshape(-1, self.block)[:, dims].double()
            pixels = pixels[torch.randperm(len(pixels), generator=torch.Generator().manual_seed(0))[:50000]]
            lam, u = torch.linalg.eigh(f)
            lam = lam.clamp_min(float(lam.max()) * 1e-6)
            whiten = (u * lam.sqrt()).T  # y = whiten @ x
            y = pixels @ whiten.T
            var, v = torch.linalg.eigh(_shrink(y.T @ y / len(y), shrinkage))
            keep = v[:, torch.argsort(var, descending=True)[: k.channels]]  # (D_k, C_k)
            k.analysis.zero_()
            k.synthesis.zero_()
            k.analysis[:, dims] = (keep.T @ whiten / step).float()
            k.synthesis[dims, :] = (torch.linalg.pinv(whiten) @ keep * step).float()
            k.analysis_bias.zero_()
            k.synthesis_bias.zero_()
            k.log_gain.zero_()

    @torch.no_grad()
    def fit_support(self, latents: list[torch.Tensor], margin: int = 1) -> None:
        """Per kind and channel, the integer support of the training latents (plus a margin);
        beyond it, values clamp. Channels a kind does not use keep the support {0}."""
        q = torch.cat([torch.round(self.encode(x)) for x in latents])
        self._set_support([(qk[:, :k.channels].amin((0, 2)) - margin, qk[:, :k.channels].amax((0, 2)) + margin)
                           for k, qk in zip(self.kinds, self._per_kind(q))])

    @torch.no_grad()
    def set_support(self, tables: EntropyTables) -> None:
        """The clamping bounds from a manifest's tables (the device clamps where the coder's tables end)."""
        lo, hi = torch.tensor(tables.lo, dtype=torch.float32), torch.tensor(tables.hi, dtype=torch.float32)
        ends = np.cumsum([0, *(k.channels for k in self.kinds)])
        self._set_support([(lo[a:b], hi[a:b]) for a, b in zip(ends, ends[1:])])

    def _set_support(self, bounds: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Per kind, (lo, hi) per used channel, written at every block of that kind; unused channels keep {0}."""
        self.lo.zero_()
        self.hi.zero_()
        for k, (lo, hi) in zip(self.kinds, bounds):
            self.lo.flatten(1)[:k.channels, k.positions] = lo[:, None]
            self.hi.flatten(1)[:k.channels, k.positions] = hi[:, None]

    @torch.no_grad()
    def tables(self) -> EntropyTables:
        """The range coder's tables: per kind, per used channel, over that kind's support."""
        offsets, pmfs = [], []
        for k in self.kinds:
            first = int(k.positions[0])
            part = k.density.tables(self.lo.flatten(1)[:k.channels, first], self.hi.flatten(1)[:k.channels, first])
            offsets += part.offsets
            pmfs += part.pmfs
        return EntropyTables(offsets, pmfs, self.kind_map, [k.channels for k in self.kinds])


def _shrink(m: torch.Tensor, amount: float) -> torch.Tensor:
    """(1 - amount) * m + amount * diag(m): a covariance estimate pulled toward its diagonal."""
    return m if amount == 0 else (1 - amount) * m + amount * torch.diag(torch.diag(m))


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
            x = self.net.reconstruct(q.reshape(-1, c)[:, :, None, None].to(torch.float32))
            return x.reshape(b, t, self.net.in_channels)
        return self.net.reconstruct(q.to(torch.float32))


class LearnedBottleneckCodec(ActivationCodec):
    name = "learned-bottleneck"
    wire_dtype = "int32"
    lossless = False

    weights_file = "bottleneck.safetensors"

    def __init__(self, net: BottleneckNet, tables: EntropyTables | None = None, weights_sha256: str | None = None
                 ) -> None:
        super().__init__(None)
        self.net = net.eval()
        self.tables = tables or net.tables()
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
        net = _net_for(params, path)
        state = load_file(str(path))
        if "analysis.weight" in state:  # written before block kinds: one transform, as a 1x1 convolution
            state = _one_kind_state(state, net)
        state.setdefault("reconstruction", torch.zeros(RECONSTRUCTION_LEVELS))  # written before the offsets: none
        net.load_state_dict(state)
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
        return self.tables.decode(enc.data, tuple(enc.shape)).reshape(enc.shape)

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
        net = _net_for(params, "the manifest's codec")
        tables = EntropyTables.from_params(params)
        net.set_support(tables)
        return cls(net, tables)


def _net_for(params: dict[str, Any], where: Any) -> BottleneckNet:
    """An empty net of the manifest's shape; a pair whose blocks overhang an odd edge but whose
    tables predate block kinds is refused (its one shared transform is not what this codes)."""
    net = BottleneckNet(params["in_channels"], params["channels"], params.get("patch", 1),
                        tuple(params.get("size", (0, 0))))
    if "kind_map" not in params and len(net.kinds) > 1:
        raise ConfigError(f"{where}: a learned bottleneck exported before edge blocks had their own transforms "
                          f"(patch {net.patch} over a {net.size[0]}x{net.size[1]} activation)",
                          "re-export the pair with aiflow split --bottleneck --export DIR --force")
    return net


def _one_kind_state(state: dict[str, torch.Tensor], net: BottleneckNet) -> dict[str, torch.Tensor]:
    """Weights saved before block kinds (one transform over every block) under today's names."""
    kind = net.kinds[0]
    out = {"mean": state["mean"], "kinds.0.analysis": state["analysis.weight"].flatten(1),
           "kinds.0.analysis_bias": state["analysis.bias"], "kinds.0.synthesis": state["synthesis.weight"].flatten(1),
           "kinds.0.synthesis_bias": state["synthesis.bias"], "kinds.0.log_gain": state["log_gain"],
           "kinds.0.positions": kind.positions, "restore": net.restore,
           "lo": state["lo"].view(-1, 1, 1).expand_as(net.lo).clone(),
           "hi": state["hi"].view(-1, 1, 1).expand_as(net.hi).clone()}
    out.update({f"kinds.0.{k}": v for k, v in state.items() if k.startswith("density.")})
    return out
