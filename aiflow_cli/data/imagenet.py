"""ImageNet folders (``../shared/data/imagenet-sample``, ``imagenet-val``) and EfficientNet-Lite preprocessing.

Split rule (fixed for the whole project, by class so that no class is in two parts)::

    class_index % 5 == 0        test        (the evaluation split: figures are reported here)
    class_index % 5 == 1        validation  (choices are made here: beta, cut, exit threshold)
    class_index % 5 in {2,3,4}  train       (bottlenecks, exit heads, students are fitted here)

A folder holds ``labels.csv`` (columns ``file`` and ``class_index``, optionally ``name``) and
``images/``. Several folders can be read as one data set; the rule applies to each.
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from aiflow_cli.errors import InputError

__all__ = ["ImageRecord", "Split", "SPLITS", "SPLIT_RULE", "split_of", "default_data_root", "imagenet_sample_dir",
           "default_image_roots", "read_labels", "center_crop", "to_tensor", "preprocess", "load_image_tensor",
           "jpeg_bytes", "load_batch", "random_resized_crop", "augmented_views"]

CROP = 224
MEAN = 0.5
STD = 0.5

Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")
SPLIT_RULE = "by class: class_index % 5 == 0 test, == 1 validation, else train"
IMAGE_FOLDERS = ("imagenet-sample", "imagenet-val")


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    class_index: int
    name: str


def split_of(class_index: int) -> Split:
    """Which part of the data an image of this class belongs to (see the module docstring)."""
    rest = class_index % 5
    return "test" if rest == 0 else "validation" if rest == 1 else "train"


def default_data_root() -> Path:
    """``$AIFLOW_DATA`` or ``../shared/data`` relative to the project root."""
    env = os.environ.get("AIFLOW_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def imagenet_sample_dir() -> Path:
    return default_data_root() / "imagenet-sample"


def default_image_roots() -> list[Path]:
    """Every ImageNet folder present under the data root (sample first); may be empty."""
    return [default_data_root() / name for name in IMAGE_FOLDERS
            if (default_data_root() / name / "labels.csv").is_file()]


def _read_rows(labels: Path) -> list[dict[str, str]]:
    from aiflow_cli.schemas.loading import read_text

    text = read_text(labels, what="labels.csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    columns = set(rows[0]) if rows else set(next(csv.reader(io.StringIO(text)), []))
    missing = [c for c in ("file", "class_index") if c not in columns]
    if missing:
        raise InputError(f"{labels}: missing column '{missing[0]}'",
                         "labels.csv needs the columns file and class_index (name is optional)")
    return rows


def read_labels(roots: Path | Iterable[Path] | None = None, split: Split | Literal["all"] = "all"
                ) -> list[ImageRecord]:
    """Records of one split (or all) from one or several folders, in file order."""
    if split != "all" and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; one of {SPLITS}")
    if roots is None:
        roots = [imagenet_sample_dir()]
    elif isinstance(roots, (str, Path)):
        roots = [Path(roots)]
    records = []
    for root in roots:
        root = Path(root)
        labels = root / "labels.csv"
        if not labels.is_file():
            raise InputError(f"{labels}: not found", "point --data at a folder with labels.csv and images/")
        for line, row in enumerate(_read_rows(labels), start=2):
            try:
                idx = int(row["class_index"])
            except (TypeError, ValueError):
                raise InputError(f"{labels}: line {line}: class_index '{row['class_index']}' is not an integer",
                                 "class_index is the ImageNet class number, 0-999") from None
            if not row.get("file"):
                raise InputError(f"{labels}: line {line}: empty file name", "every row names an image in images/")
            if split != "all" and split_of(idx) != split:
                continue
            records.append(ImageRecord(root / "images" / row["file"], idx, row.get("name") or str(idx)))
    return records


def center_crop(img: Image.Image, size: int = CROP) -> Image.Image:
    """Resize the short side to 256 if needed (the sample already is), then crop the centre."""
    w, h = img.size
    if min(w, h) != 256:
        scale = 256 / min(w, h)
        img = img.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
        w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """An image already at the model's size -> (3, H, W), scaled to [0,1], normalised (mean 0.5, std 0.5).

    This is what the server does with an uploaded 224x224 crop: no second resize or crop.
    """
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return (torch.from_numpy(arr).permute(2, 0, 1) - MEAN) / STD


def preprocess(img: Image.Image) -> torch.Tensor:
    """Any photo -> (3, 224, 224): short side 256, centre crop 224, then :func:`to_tensor`."""
    return to_tensor(center_crop(img.convert("RGB")))


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise InputError(f"{path}: image not found", "labels.csv names a file that is not in images/") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path}: not a readable image ({exc.__class__.__name__})",
                         "replace or remove it from labels.csv") from None


def load_image_tensor(path: Path) -> torch.Tensor:
    with _open(path) as img:
        return preprocess(img)


def jpeg_bytes(path_or_image: Path | Image.Image, quality: int = 90, size: int = CROP) -> int:
    """Size of the centre-cropped 224x224 image re-encoded as JPEG at ``quality``: the upload cost."""
    img = _open(path_or_image) if isinstance(path_or_image, (str, Path)) else path_or_image
    buf = io.BytesIO()
    center_crop(img.convert("RGB"), size).save(buf, format="JPEG", quality=quality)
    return buf.tell()


def random_resized_crop(img: Image.Image, rng: random.Random, size: int = CROP, scale: tuple[float, float] = (0.25, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Image.Image:
    """A random crop of ``scale`` x the area and ``ratio`` aspect, resized to ``size``, flipped half
    the time (the usual ImageNet training augmentation; a centre crop after ten failed draws)."""
    w, h = img.size
    for _ in range(10):
        area = w * h * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
            break
    else:
        cw = ch = min(w, h)
        left, top = (w - cw) // 2, (h - ch) // 2
    out = img.crop((left, top, left + cw, top + ch)).resize((size, size), Image.BILINEAR)
    return out.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else out


def augmented_views(records: list[ImageRecord], views: int, seed: int = 0) -> Iterator[torch.Tensor]:
    """``views`` random resized crops of every image, in record order, reproducible from ``seed``."""
    rng = random.Random(seed)
    for r in records:
        with _open(r.path) as img:
            rgb = img.convert("RGB")
            for _ in range(views):
                yield to_tensor(random_resized_crop(rgb, rng))


def load_batch(records: list[ImageRecord]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack([load_image_tensor(r.path) for r in records])
    labels = torch.tensor([r.class_index for r in records])
    return images, labels
