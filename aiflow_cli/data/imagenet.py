"""The ImageNet sample in ``../shared/data/imagenet-sample`` and EfficientNet-Lite preprocessing.

Split convention (fixed for the whole project): ``class_index % 5 == 0`` is the evaluation
split; everything else may be used for training and calibration.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from aiflow_cli.errors import InputError

__all__ = ["ImageRecord", "default_data_root", "imagenet_sample_dir", "read_labels", "preprocess",
           "load_image_tensor", "jpeg_bytes", "load_batch"]

CROP = 224
MEAN = 0.5
STD = 0.5


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    class_index: int
    name: str


def default_data_root() -> Path:
    """``$AIFLOW_DATA`` or ``../shared/data`` relative to the project root."""
    env = os.environ.get("AIFLOW_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def imagenet_sample_dir() -> Path:
    return default_data_root() / "imagenet-sample"


def read_labels(root: Path | None = None, split: Literal["all", "train", "eval"] = "all") -> list[ImageRecord]:
    root = Path(root) if root is not None else imagenet_sample_dir()
    labels = root / "labels.csv"
    if not labels.is_file():
        raise InputError(f"{labels}: not found", "point --data at a folder with labels.csv and images/")
    records = []
    with labels.open(newline="") as fh:
        for row in csv.DictReader(fh):
            idx = int(row["class_index"])
            if split == "eval" and idx % 5 != 0 or split == "train" and idx % 5 == 0:
                continue
            records.append(ImageRecord(root / "images" / row["file"], idx, row["name"]))
    return records


def _center_crop(img: Image.Image, size: int = CROP) -> Image.Image:
    """Resize the short side to 256 if needed (the sample already is), then crop the centre."""
    w, h = img.size
    if min(w, h) != 256:
        scale = 256 / min(w, h)
        img = img.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
        w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def preprocess(img: Image.Image) -> torch.Tensor:
    """PIL image -> (3, 224, 224) float tensor, scaled to [0,1] then normalised (mean 0.5, std 0.5)."""
    arr = np.asarray(_center_crop(img.convert("RGB")), dtype=np.float32) / 255.0
    return (torch.from_numpy(arr).permute(2, 0, 1) - MEAN) / STD


def load_image_tensor(path: Path) -> torch.Tensor:
    with Image.open(path) as img:
        return preprocess(img)


def jpeg_bytes(path_or_image: Path | Image.Image, quality: int = 90, size: int = CROP) -> int:
    """Size of the centre-cropped 224x224 image re-encoded as JPEG at ``quality``: the upload cost."""
    img = Image.open(path_or_image) if isinstance(path_or_image, (str, Path)) else path_or_image
    buf = io.BytesIO()
    _center_crop(img.convert("RGB"), size).save(buf, format="JPEG", quality=quality)
    return buf.tell()


def load_batch(records: list[ImageRecord]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack([load_image_tensor(r.path) for r in records])
    labels = torch.tensor([r.class_index for r in records])
    return images, labels
