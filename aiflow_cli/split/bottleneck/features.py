"""Frozen-backbone features at a cut, cached on disk so bottleneck training takes minutes on a CPU.

The data is split by class (:data:`aiflow_cli.data.imagenet.SPLIT_RULE`): the bottleneck and
the exit heads are fitted on *train* (each image also mirrored), every choice (beta, cut, exit
threshold) is made on *validation*, and figures are reported on *test*. Alongside the
activation at the cut, each part keeps the unsplit model's logits (the distillation target),
the labels, the pooled activation at every cut (exit heads) and the classifier's input.

The codec's objective (KL to the unsplit model) needs no labels, so its training set can grow
with augmented views of the training images (random resized crops and flips): for those only
the activation at the cut and the unsplit logits are kept.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import torch

from aiflow_cli.errors import InputError
from aiflow_cli.models.cache import cache_dir
from aiflow_cli.models.segmented import SegmentedModel

__all__ = ["SplitFeatures", "CutFeatures", "cut_features", "check_image_data", "classifier_of", "augmented_features"]

_PARTS = ("train", "validation", "test")


@dataclass
class SplitFeatures:
    """One part of the data seen at one cut."""

    x: torch.Tensor  # (N, C, H, W) activation at the cut
    logits: torch.Tensor  # (N, classes) the unsplit model's output
    labels: torch.Tensor  # (N,)
    pooled: dict[str, torch.Tensor]  # cut -> (N, C_cut) global-average-pooled activation, every cut
    penultimate: torch.Tensor  # (N, F) the classifier's input (exit heads regress onto it)
    groups: torch.Tensor | None = None  # (N,) inputs that are not independent share an id (an image and its mirror)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def reference_correct(self) -> torch.Tensor:
        """(N,) bool: where the unsplit model is right."""
        return self.logits.argmax(-1) == self.labels


@dataclass
class CutFeatures:
    cut: str
    train: SplitFeatures
    validation: SplitFeatures
    test: SplitFeatures
    roots: list[Path]
    augmented: tuple[torch.Tensor, torch.Tensor] | None = None  # (x, unsplit logits) of augmented training views

    @cached_property
    def selection(self) -> SplitFeatures:
        """The training inputs (with their mirrors) and validation together: what choices read.

        Measured at block12 of EfficientNet-Lite0: the drop on 239 validation images alone ranked
        the points wrongly (-0.8/+0.4/+0.8 points where test saw +0.0/+2.8/+3.8). The training
        inputs are not unseen, though: their KL to the unsplit model is 0.89x validation's with
        the default shrinkage (0.77x without), so this drop is optimistic, and choices read it one
        standard error up. ``groups`` makes an image and its mirror one unit for that error.
        """
        parts = (self.train, self.validation)
        train_groups = self.train.groups if self.train.groups is not None else torch.arange(len(self.train))
        groups = torch.cat([train_groups, int(train_groups.max()) + 1 + torch.arange(len(self.validation))])
        return SplitFeatures(x=torch.cat([p.x for p in parts]), logits=torch.cat([p.logits for p in parts]),
                             labels=torch.cat([p.labels for p in parts]),
                             pooled={c: torch.cat([p.pooled[c] for p in parts]) for c in self.train.pooled},
                             penultimate=torch.cat([p.penultimate for p in parts]), groups=groups)

    def codec_training(self) -> tuple[torch.Tensor, torch.Tensor]:
        """What the codec trains on: the training images (and mirrors), plus any augmented views."""
        if self.augmented is None:
            return self.train.x, self.train.logits
        return torch.cat([self.train.x, self.augmented[0]]), torch.cat([self.train.logits, self.augmented[1]])


def check_image_data(roots: Path | list[Path] | None) -> list[Path]:
    """The data folders to use (default: every ImageNet folder under the data root), each with
    images in all three parts of the split."""
    from aiflow_cli.data.imagenet import (
        default_data_root,
        default_image_roots,
        read_labels,
    )

    if roots is None or roots == []:
        roots = default_image_roots()
        if not roots:
            raise InputError(f"{default_data_root()}: no ImageNet folder (imagenet-sample/, imagenet-val/)",
                             "pass --data FOLDER with labels.csv and images/, or set AIFLOW_DATA")
    roots = [Path(r) for r in ([roots] if isinstance(roots, (str, Path)) else roots)]
    for root in roots:
        if not (root / "labels.csv").is_file():
            raise InputError(f"{root}: no labels.csv", "--data must be a folder with labels.csv and images/")
    for part in _PARTS:
        if not read_labels(roots, part):
            raise InputError(f"{', '.join(map(str, roots))}: no {part} images",
                             "--data needs images in every part of the split (class_index % 5 == 0 test, "
                             "== 1 validation, else train)")
    return roots


def classifier_of(model: SegmentedModel) -> torch.nn.Linear:
    """The last linear layer of the last segment: the classifier exit heads share."""
    linears = [m for m in model.segments[-1].module.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise InputError(f"{model.name}: the last segment has no linear classifier",
                         "early exits need an image classifier such as zoo:efficientnet-lite0")
    return linears[-1]


@torch.no_grad()
def _run(model: SegmentedModel, images: torch.Tensor, cut_index: int | None, shared: bool) -> dict[str, torch.Tensor]:
    """The activation at ``cut_index`` (if given) and, with ``shared``, what every cut shares:
    the unsplit logits, the pooled activation at every cut and the classifier's input."""
    acts, logits, pooled, penult = [], [], {c: [] for c in model.cuts}, []
    stop = len(model.segments) if shared else cut_index + 1  # type: ignore[operator]
    hook = classifier_of(model).register_forward_pre_hook(lambda _m, args: penult.append(args[0].detach().clone()))
    try:
        for i in range(0, len(images), 25):
            h = images[i:i + 25]
            for j, seg in enumerate(model.segments[:stop]):
                h = seg.module(h)
                if j < len(model.cuts) and shared:
                    pooled[model.cuts[j]].append(h.mean((2, 3)))
                if j == cut_index:
                    acts.append(h.clone())
            if shared:
                logits.append(h)
    finally:
        hook.remove()
    out = {"x": torch.cat(acts)} if cut_index is not None else {}
    if shared:
        out.update({"logits": torch.cat(logits), "penultimate": torch.cat(penult)})
        out.update({f"pooled.{c}": torch.cat(v) for c, v in pooled.items()})
    return out


def _load_part(model: SegmentedModel, roots: list[Path], part: str, cut_index: int | None,
               shared: bool) -> dict[str, torch.Tensor]:
    from aiflow_cli.data.imagenet import load_batch, read_labels

    images, labels = load_batch(read_labels(roots, part))  # type: ignore[arg-type]
    if part == "train":  # mirrored copies: twice the training inputs for free
        images, labels = torch.cat([images, images.flip(-1)]), torch.cat([labels, labels])
    out = _run(model, images, cut_index, shared)
    if shared:
        out["labels"] = labels
    return out


def _cached(path: Path, compute) -> dict[str, torch.Tensor]:  # noqa: ANN001 - () -> dict
    from safetensors.torch import load_file, save_file

    if path.is_file():
        return load_file(str(path))
    t = compute()
    tmp = path.with_suffix(f".tmp{id(t)}")
    save_file({k: v.contiguous() for k, v in t.items()}, str(tmp))
    tmp.replace(path)
    return t


def _stem(model: SegmentedModel, roots: list[Path]) -> str:
    folders = hashlib.sha256("|".join(str(r.resolve()) for r in roots).encode()).hexdigest()[:8]
    return f"v3-{model.fingerprint()[:16]}-{folders}"


@torch.no_grad()
def augmented_features(model: SegmentedModel, cuts: list[str], data: Path | list[Path] | None, views: int,
                       seed: int = 0, progress: Callable[[str, int, int], None] | None = None
                       ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(x at the cut, unsplit logits) for ``views`` augmented views of every training image, per cut;
    one pass through the model serves every cut; cached per model, folders, views and seed."""
    from aiflow_cli.data.imagenet import augmented_views, read_labels

    roots = check_image_data(data)
    paths = {c: cache_dir("features") / f"{_stem(model, roots)}-aug{views}s{seed}-{c}.safetensors" for c in cuts}
    missing = [c for c in cuts if not paths[c].is_file()]
    if missing:
        records = read_labels(roots, "train")
        index = {model.cut_index(c): c for c in missing}
        xs: dict[str, list[torch.Tensor]] = {c: [] for c in missing}
        logits: list[torch.Tensor] = []
        batch: list[torch.Tensor] = []

        def flush() -> None:
            h = torch.stack(batch)
            for j, seg in enumerate(model.segments):
                h = seg.module(h)
                if j in index:
                    xs[index[j]].append(h.clone())
            logits.append(h)
            batch.clear()

        total = len(records) * views
        for done, view in enumerate(augmented_views(records, views, seed), start=1):
            batch.append(view)
            if len(batch) == 32 or done == total:
                flush()
                if progress:
                    progress("augmented views", done, total)
        all_logits = torch.cat(logits)
        for c in missing:
            _cached(paths[c], lambda c=c: {"x": torch.cat(xs[c]), "logits": all_logits})
    out = {}
    for c in cuts:
        t = _cached(paths[c], dict)
        out[c] = (t["x"], t["logits"])
    return out


def cut_features(model: SegmentedModel, cut_index: int | None, data: Path | list[Path] | None = None) -> CutFeatures:
    """Features of every part of the data; the activation ``x`` only at ``cut_index`` (None: exits
    only need what every cut shares, and ``x`` is empty). Cached per model, folders and cut."""
    roots = check_image_data(data)
    stem = _stem(model, roots)
    shared_path = cache_dir("features") / f"{stem}-shared.safetensors"
    cut = model.cuts[cut_index] if cut_index is not None else None
    cut_path = cache_dir("features") / f"{stem}-{cut}.safetensors"
    if shared_path.is_file():
        t = _cached(shared_path, dict)
    else:  # one pass computes what every cut shares and the activation at this cut
        t = {f"{part}/{k}": v for part in _PARTS for k, v in _load_part(model, roots, part, cut_index, True).items()}
        _cached(shared_path, lambda: {k: v for k, v in t.items() if not k.endswith("/x")})
        if cut is not None:
            _cached(cut_path, lambda: {k: v for k, v in t.items() if k.endswith("/x")})
    if cut is not None and "test/x" not in t:
        t.update(_cached(cut_path, lambda: {f"{part}/x": _load_part(model, roots, part, cut_index, False)["x"]
                                            for part in _PARTS}))

    def part(name: str) -> SplitFeatures:
        labels = t[f"{name}/labels"]
        half = torch.arange(len(labels) // 2)
        return SplitFeatures(x=t.get(f"{name}/x", torch.empty(0)), logits=t[f"{name}/logits"],
                             labels=labels, pooled={c: t[f"{name}/pooled.{c}"] for c in model.cuts},
                             penultimate=t[f"{name}/penultimate"],
                             groups=torch.cat([half, half]) if name == "train" else None)  # see _load_part

    return CutFeatures(cut=cut or "", train=part("train"), validation=part("validation"), test=part("test"),
                       roots=roots)
