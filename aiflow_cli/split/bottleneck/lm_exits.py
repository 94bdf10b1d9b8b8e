"""Early exits for causal LMs: after decoder layer k, the final norm + the shared LM head answer.

The head reads ``A h_k + b``, a linear map fitted by ridge regression from layer k's hidden
states onto the last layer's (the input the shared head reads) on WikiText-2 *valid*; so it
distils the full model's output through its own head. An exit fires for a token when its max
softmax passes a threshold calibrated on a held-out part of *valid* with the same label-free
bound as the image exits (the upper confidence bound of the share of tokens where it fires and
disagrees with the full model, within ``max_drop``). WikiText-2 *test* reports next-token top-1, drop, exit rate and compute
saved, each with its 95% interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from aiflow_cli.errors import InputError
from aiflow_cli.models.segmented import SegmentedModel
from aiflow_cli.schemas.bottleneck import ExitPoint, Scores
from aiflow_cli.schemas.figures import Share
from aiflow_cli.split.bottleneck.exits import calibrate_threshold, ridge_map
from aiflow_cli.stats import drop_of, share

__all__ = ["lm_exit_points", "LmTokens", "LmExitRun", "LM_SPLIT_RULE"]

LM_SPLIT_RULE = ("WikiText-2: valid, first 3/4 of the tokens fit the exit maps, last 1/4 calibrates the thresholds "
                 "(validation); test reports")

Progress = Callable[[str, int, int], None]


@dataclass
class LmTokens:
    hidden: dict[str, torch.Tensor]  # exit cut -> (T, D) hidden states after that layer
    final: torch.Tensor  # (T, D) input of the head (last layer's output)
    logits_top: torch.Tensor  # (T,) the full model's next-token prediction
    targets: torch.Tensor  # (T,) the real next token


def _token_windows(split: str, tokenizer, tokens: int, context: int) -> list[torch.Tensor]:  # noqa: ANN001
    from aiflow_cli.data.text import wikitext_path

    path = wikitext_path(split)  # type: ignore[arg-type]
    if not path.is_file():
        raise InputError(f"{path}: not found", "early exits for language models train on WikiText-2 valid, "
                         "report on test (../shared/data/wikitext-2, or set AIFLOW_DATA)")
    ids = tokenizer(path.read_text(encoding="utf-8")[: tokens * 12], return_tensors="pt")["input_ids"][0]
    ids = ids[: tokens + 1]
    return [ids[i:i + context + 1] for i in range(0, len(ids) - 1, context) if len(ids[i:i + context + 1]) > 1]


@torch.no_grad()
def collect(model: SegmentedModel, exits: list[str], split: str, tokens: int, context: int = 256,
            progress: Progress | None = None) -> LmTokens:
    indices = {model.cut_index(e): e for e in exits}
    hidden: dict[str, list[torch.Tensor]] = {e: [] for e in exits}
    final, tops, targets = [], [], []
    state = model.extras["kv_state"]
    state.clear()  # cache-free forward over whole windows
    windows = _token_windows(split, model.tokenizer, tokens, context)
    for n, window in enumerate(windows):
        h = window[None, :-1]
        for i, seg in enumerate(model.segments[:-1]):
            h = seg.module(h)
            if i in indices:
                hidden[indices[i]].append(h[0])
        final.append(h[0])
        tops.append(model.segments[-1].module(h)[0].argmax(-1))
        targets.append(window[1:])
        if progress:
            progress(f"WikiText-2 {split}", n + 1, len(windows))
    return LmTokens({e: torch.cat(v) for e, v in hidden.items()}, torch.cat(final), torch.cat(tops), torch.cat(targets))


@torch.no_grad()
def _head_confidence(model: SegmentedModel, h: torch.Tensor, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    head = model.segments[-1].module
    conf, top = [], []
    for i in range(0, len(h), batch):
        p = head(h[i:i + batch][None])[0].softmax(-1)
        c, t = p.max(-1)
        conf.append(c)
        top.append(t)
    return torch.cat(conf), torch.cat(top)


def _layer_macs(model: SegmentedModel) -> list[float]:
    """Parameters per segment as a MAC proxy per token (a decoder layer is weight-bound)."""
    out = []
    for seg in model.segments:
        out.append(float(sum(p.numel() for p in seg.module.parameters())))
    out[0] = 0.0  # embeddings are a lookup, not a matmul
    return out


@dataclass
class LmExitRun:
    reference_validation: Share
    reference_test: Share
    fit_tokens: int
    calibration_tokens: int
    test_tokens: int
    points: list[ExitPoint]


def lm_exit_points(model: SegmentedModel, exits: list[str], max_drop: float, train_tokens: int = 8192,
                   eval_tokens: int = 8192, progress: Progress | None = None) -> LmExitRun:
    """Fit each exit's map on the first 3/4 of the WikiText-2 valid tokens, calibrate its threshold on
    the last 1/4 (the validation part), report on WikiText-2 test."""
    if model.task != "causal-lm":
        raise InputError(f"{model.name} is a {model.task} model", "LM exits need a causal LM such as zoo:smollm2-135m")
    for e in exits:
        model.cut_index(e)  # unknown cut -> error naming the valid ones
    train = collect(model, exits, "valid", train_tokens, progress=progress)
    test = collect(model, exits, "test", eval_tokens, progress=progress)
    macs = _layer_macs(model)
    held = torch.zeros(len(train.final), dtype=torch.bool)
    held[int(len(held) * 0.75):] = True  # the last quarter of valid calibrates
    ref_correct = (test.logits_top == test.targets).numpy()
    points = []
    for e in exits:
        w, b = ridge_map(train.hidden[e][~held], train.final[~held], 1e-2)
        conf, top = _head_confidence(model, train.hidden[e][held] @ w.T + b)
        threshold, bound = calibrate_threshold(conf, top != train.logits_top[held], max_drop)
        validation_rate = float((conf >= threshold).float().mean())
        conf, top = _head_confidence(model, test.hidden[e] @ w.T + b)
        fired = conf >= threshold
        pred = torch.where(fired, top, test.logits_top)
        correct = (pred == test.targets).numpy()
        skipped = sum(macs[model.cut_index(e) + 1:-1]) / sum(macs)  # the head runs either way
        points.append(ExitPoint(
            cut=e, threshold=threshold, calibration_bound=bound, validation_exit_rate=validation_rate,
            exit_rate=share(fired.numpy()),
            exit_top1=share((top[fired] == test.targets[fired]).numpy()) if fired.any() else None,
            test=Scores(top1=share(correct), agreement=share((pred == test.logits_top).numpy()),
                        drop=drop_of(ref_correct, correct)),
            compute_saved=float(fired.float().mean()) * skipped))
    val_ref = (train.logits_top[held] == train.targets[held]).numpy()
    return LmExitRun(reference_validation=share(val_ref), reference_test=share(ref_correct),
                     fit_tokens=int((~held).sum()), calibration_tokens=int(held.sum()), test_tokens=len(test.targets),
                     points=points)
