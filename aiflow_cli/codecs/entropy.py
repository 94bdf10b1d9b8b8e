"""A learned factorised density per channel, and real entropy coding with it (constriction).

The density is the "factorized prior" of Balle et al. 2018 (as in CompressAI's
EntropyBottleneck): per channel, a small monotone network gives a cumulative function ``c(x)``;
the probability of an integer symbol ``q`` is ``c(q + 1/2) - c(q - 1/2)``. Training sees
``z + U(-1/2, 1/2)`` (a differentiable stand-in for rounding) and pays ``-log2 p`` bits.

After training, each channel's probabilities over an integer support ``[lo, hi]`` (learned from
the training latents; values outside are clamped on the device) become a categorical table, and
a range coder (constriction) turns the symbols into bytes::

    z (N, C, H, W) --round, clamp--> q --per channel: Categorical(table_c)--> range coder --> bytes
"""

from __future__ import annotations

import math
import struct

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["FactorizedDensity", "EntropyTables", "HEADER_BYTES"]

HEADER_BYTES = 8  # four uint16: N, C, H, W


class FactorizedDensity(nn.Module):
    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0) -> None:
        super().__init__()
        sizes = (1, *filters, 1)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1 / scale / sizes[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, sizes[i + 1], sizes[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, sizes[i + 1], 1) - 0.5))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, sizes[i + 1], 1)))

    def logits_cdf(self, x: torch.Tensor) -> torch.Tensor:
        """x: (C, 1, M) -> logit of the cumulative at x, (C, 1, M). Monotone in x by construction."""
        h = x
        for i, (matrix, bias) in enumerate(zip(self.matrices, self.biases)):
            h = torch.matmul(F.softplus(matrix), h) + bias
            if i < len(self.factors):
                h = h + torch.tanh(self.factors[i]) * torch.tanh(h)
        return h

    def likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """p(z) for (N, C, H, W) z: mass of the unit interval around each value."""
        n, c, h, w = z.shape
        v = z.permute(1, 0, 2, 3).reshape(c, 1, -1)
        lower, upper = self.logits_cdf(v - 0.5), self.logits_cdf(v + 0.5)
        sign = -torch.sign(lower + upper).detach()  # evaluate in the tail where sigmoid is accurate
        p = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return p.clamp_min(1e-9).reshape(c, n, h, w).permute(1, 0, 2, 3)

    @torch.no_grad()
    def tables(self, lo: torch.Tensor, hi: torch.Tensor) -> "EntropyTables":
        """Categorical tables over [lo_c, hi_c]; the tails fold into the end symbols (values are clamped)."""
        pmfs = []
        for ch in range(len(lo)):
            support = torch.arange(int(lo[ch]), int(hi[ch]) + 1, dtype=torch.float32)
            edges = torch.cat([support - 0.5, support[-1:] + 0.5])
            cdf = torch.sigmoid(self.logits_cdf_channel(ch, edges))
            pmf = cdf[1:] - cdf[:-1]
            pmf[0] += cdf[0]  # everything below lo is clamped to lo
            pmf[-1] += 1 - cdf[-1]  # and above hi to hi
            pmfs.append(pmf.clamp_min(1e-9).double().numpy())
        return EntropyTables([int(v) for v in lo], [p / p.sum() for p in pmfs])

    def logits_cdf_channel(self, ch: int, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(1, -1)
        for i, (matrix, bias) in enumerate(zip(self.matrices, self.biases)):
            h = torch.matmul(F.softplus(matrix[ch]), h) + bias[ch]
            if i < len(self.factors):
                h = h + torch.tanh(self.factors[i][ch]) * torch.tanh(h)
        return h.reshape(-1)


class EntropyTables:
    """Categorical tables and the range coder that uses them.

    Without a layout there is one table per channel, over every position. With a layout
    (``kind_map``: the kind of every position of the (H, W) grid; ``kind_channels``: how many
    channels each kind uses) the tables run kind by kind, one per used channel of that kind, each
    over that kind's positions; the channels a kind does not use are zero and cost nothing.
    """

    def __init__(self, offsets: list[int], pmfs: list[np.ndarray], kind_map: list[list[int]] | None = None,
                 kind_channels: list[int] | None = None) -> None:
        self.offsets = [int(o) for o in offsets]
        self.pmfs = [np.asarray(p, dtype=np.float64) for p in pmfs]
        self.kind_map = kind_map
        self.kind_channels = kind_channels
        if kind_map is not None and sum(kind_channels or []) != len(self.pmfs):
            raise ValueError(f"{len(self.pmfs)} tables for kinds using {kind_channels} channels")

    @property
    def lo(self) -> np.ndarray:
        return np.array(self.offsets)

    @property
    def hi(self) -> np.ndarray:
        return np.array([o + len(p) - 1 for o, p in zip(self.offsets, self.pmfs)])

    def _slots(self, shape: tuple[int, ...]):
        """(table index, channel, grid rows, grid columns) in coding order, for a (N, C, H, W) wire."""
        _, c, h, w = shape
        if self.kind_map is None:
            rows, cols = np.divmod(np.arange(h * w), w)
            for ch in range(c):
                yield ch, ch, rows, cols
            return
        grid = np.asarray(self.kind_map)
        if grid.shape != (h, w):
            raise ValueError(f"the tables are for a {grid.shape} grid, the symbols have {(h, w)}")
        table = 0
        for kind, used in enumerate(self.kind_channels or []):
            rows, cols = np.nonzero(grid == kind)
            for ch in range(used):
                yield table, ch, rows, cols
                table += 1

    def bits(self, q: np.ndarray) -> float:
        """Information content of integer symbols q (N, C, H, W) under the tables: -sum log2 p."""
        total = 0.0
        for t, ch, rows, cols in self._slots(q.shape):
            total += -np.log2(self.pmfs[t][q[:, ch, rows, cols].reshape(-1) - self.offsets[t]]).sum()
        return float(total)

    def encode(self, q: np.ndarray) -> bytes:
        import constriction

        n, c, h, w = q.shape
        coder = constriction.stream.queue.RangeEncoder()
        for t, ch, rows, cols in self._slots(q.shape):
            pmf = self.pmfs[t]
            if len(pmf) == 1:  # a channel with one possible symbol carries no information: nothing to code
                continue
            symbols = (q[:, ch, rows, cols].reshape(-1) - self.offsets[t]).astype(np.int32)
            coder.encode(symbols, constriction.stream.model.Categorical(pmf, perfect=False))
        return struct.pack("<4H", n, c, h, w) + coder.get_compressed().tobytes()

    def decode(self, data: bytes, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The symbols back. ``shape``: what the frame around these bytes declares (already bounded);
        a header that holds another number of symbols is refused before anything is allocated (the
        per-token codec codes (1, T, D) hidden states as T x D x 1 x 1, so the counts are compared)."""
        import constriction

        if len(data) < HEADER_BYTES:
            raise ValueError(f"{len(data)} bytes: shorter than the {HEADER_BYTES}-byte header")
        n, c, h, w = struct.unpack("<4H", data[:HEADER_BYTES])
        if shape is not None and n * c * h * w != math.prod(shape):
            raise ValueError(f"the coded header says {[n, c, h, w]}, the frame {list(shape)}")
        words = np.frombuffer(data[HEADER_BYTES:], dtype=np.uint32)
        decoder = constriction.stream.queue.RangeDecoder(words)
        q = np.zeros((n, c, h, w), dtype=np.int32)
        for t, ch, rows, cols in self._slots(q.shape):
            pmf, off = self.pmfs[t], self.offsets[t]
            if len(pmf) == 1:
                q[:, ch, rows, cols] = off
                continue
            symbols = decoder.decode(constriction.stream.model.Categorical(pmf, perfect=False), n * len(rows))
            q[:, ch, rows, cols] = (np.asarray(symbols) + off).reshape(n, len(rows))
        return q

    def to_params(self) -> dict:
        layout = {} if self.kind_map is None else {"kind_map": self.kind_map, "kind_channels": self.kind_channels}
        return {"offsets": self.offsets, "pmfs": [[round(float(v), 12) for v in p] for p in self.pmfs], **layout}

    @classmethod
    def from_params(cls, params: dict) -> "EntropyTables":
        return cls(params["offsets"], [np.array(p) for p in params["pmfs"]], params.get("kind_map"),
                   params.get("kind_channels"))
