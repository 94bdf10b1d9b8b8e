"""Frozen-backbone features at a cut, cached on disk so bottleneck training takes minutes on a CPU.

For the ImageNet sample: training split (class_index % 5 != 0, each image also flipped) and
evaluation split (class_index % 5 == 0, never used for training). Alongside the activation at
the cut: the unsplit model's logits (the distillation target) and the labels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from aiflow_cli.errors import InputError
from aiflow_cli.models.cache import cache_dir
from aiflow_cli.models.segmented import SegmentedModel

__all__ = ["CutFeatures", "cut_features", "check_image_data", "classifier_of"]


@dataclass
class CutFeatures:
    cut: str
    train_x: torch.Tensor
    train_logits: torch.Tensor
    train_labels: torch.Tensor
    eval_x: torch.Tensor
    eval_logits: torch.Tensor
    eval_labels: torch.Tensor
    train_pooled: dict[str, torch.Tensor]  # cut -> (N, C) global-average-pooled activation, every cut
    eval_pooled: dict[str, torch.Tensor]
    train_penultimate: torch.Tensor | None = None  # (N, F) the classifier's input (exit heads regress onto it)
    eval_penultimate: torch.Tensor | None = None


def check_image_data(root: Path | None) -> Path:
    from aiflow_cli.data.imagenet import imagenet_sample_dir, read_labels

    root = Path(root) if root is not None else imagenet_sample_dir()
    if not (root / "labels.csv").is_file():
        raise InputError(f"{root}: no labels.csv", "--data must be a folder with labels.csv and images/")
    if not read_labels(root, "train") or not read_labels(root, "eval"):
        raise InputError(f"{root}: the data folder is empty (no training or evaluation images)",
                         "--data needs images with class_index % 5 != 0 (train) and == 0 (evaluation)")
    return root


@torch.no_grad()
def _run(model: SegmentedModel, images: torch.Tensor, cut_index: int
         ) -> tuple[torch.Tensor, torch.Tensor, dict, torch.Tensor]:
    acts, logits, pooled, penult = [], [], {c: [] for c in model.cuts}, []
    hook = classifier_of(model).register_forward_pre_hook(lambda _m, args: penult.append(args[0].detach().clone()))
    try:
        _run_batches(model, images, cut_index, acts, logits, pooled)
    finally:
        hook.remove()
    return torch.cat(acts), torch.cat(logits), {c: torch.cat(v) for c, v in pooled.items()}, torch.cat(penult)


def classifier_of(model: SegmentedModel) -> torch.nn.Linear:
    """The last linear layer of the last segment: the classifier exit heads share."""
    linears = [m for m in model.segments[-1].module.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise InputError(f"{model.name}: the last segment has no linear classifier",
                         "early exits need an image classifier such as zoo:efficientnet-lite0")
    return linears[-1]


def _run_batches(model: SegmentedModel, images: torch.Tensor, cut_index: int, acts: list, logits: list,
                 pooled: dict) -> None:
    for i in range(0, len(images), 25):
        h = images[i:i + 25]
        for j, seg in enumerate(model.segments):
            h = seg.module(h)
            if j < len(model.cuts):
                pooled[model.cuts[j]].append(h.mean((2, 3)))
                if j == cut_index:
                    acts.append(h.clone())
        logits.append(h)


def cut_features(model: SegmentedModel, cut_index: int, data: Path | None = None) -> CutFeatures:
    from safetensors.torch import load_file, save_file

    from aiflow_cli.data.imagenet import load_batch, read_labels

    root = check_image_data(data)
    cut = model.cuts[cut_index]
    folder = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]  # stable across processes
    key = f"v2-{model.fingerprint()[:16]}-{folder}-{cut}.safetensors"
    path = cache_dir("features") / key
    if path.is_file():
        t = load_file(str(path))
    else:
        train_images, train_labels = load_batch(read_labels(root, "train"))
        train_images = torch.cat([train_images, train_images.flip(-1)])
        train_labels = torch.cat([train_labels, train_labels])
        eval_images, eval_labels = load_batch(read_labels(root, "eval"))
        tx, tl, tp, tf = _run(model, train_images, cut_index)
        ex, el, ep, ef = _run(model, eval_images, cut_index)
        t = {"train_x": tx, "train_logits": tl, "train_labels": train_labels, "eval_x": ex, "eval_logits": el,
             "eval_labels": eval_labels, "train_penultimate": tf, "eval_penultimate": ef}
        t.update({f"train_pooled.{c}": v for c, v in tp.items()})
        t.update({f"eval_pooled.{c}": v for c, v in ep.items()})
        tmp = path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in t.items()}, str(tmp))
        tmp.replace(path)
    return CutFeatures(
        cut=cut, train_x=t["train_x"], train_logits=t["train_logits"], train_labels=t["train_labels"],
        eval_x=t["eval_x"], eval_logits=t["eval_logits"], eval_labels=t["eval_labels"],
        train_pooled={c: t[f"train_pooled.{c}"] for c in model.cuts},
        eval_pooled={c: t[f"eval_pooled.{c}"] for c in model.cuts},
        train_penultimate=t["train_penultimate"], eval_penultimate=t["eval_penultimate"],
    )
