"""The library call behind ``aiflow split --bottleneck``: train, measure, compare, choose, export.

For each cut: cache frozen-backbone features, estimate the task's Fisher information once,
train one bottleneck per beta, and measure every point and every baseline on the evaluation
split with real range coding. Early-exit heads are fitted and calibrated on the training split.
With links, each point gets a predicted latency and ``auto`` picks, per link, the fastest
(cut, beta, exit) whose top-1 stays within ``max_drop`` points of the unsplit model.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from aiflow_cli.errors import InputError
from aiflow_cli.models.segmented import SegmentedModel
from aiflow_cli.schemas.bottleneck import BaselinePoint, BottleneckReport, ExitPoint, JointChoice, RatePoint
from aiflow_cli.split.bottleneck.baselines import (activation_baselines, jpeg_baselines, uniform_baselines)
from aiflow_cli.split.bottleneck.exits import ExitResult, train_exit
from aiflow_cli.split.bottleneck.features import CutFeatures, check_image_data, classifier_of, cut_features
from aiflow_cli.split.bottleneck.train import TrainedPoint, TrainSettings, task_fisher, train_bottleneck
from aiflow_cli.split.cost import Link

__all__ = ["BottleneckRun", "run_bottleneck", "check_bottleneck_settings", "interpolate_bytes_at", "exit_points"]

Progress = Callable[[str, int, int], None]


@dataclass
class BottleneckRun:
    report: BottleneckReport
    trained: dict[tuple[str, float], TrainedPoint] = field(default_factory=dict)
    exits: dict[str, ExitResult] = field(default_factory=dict)


def check_bottleneck_settings(model: SegmentedModel, cuts: list[str], betas: list[float], max_drop: float,
                              data: Path | None) -> Path:
    """Every check that can fail before minutes of work: one clear error each."""
    if not betas:
        raise InputError("--beta needs at least one value", "for example --beta 3e-5,1e-4,3e-4")
    for b in betas:
        if not b > 0:
            raise InputError(f"--beta must be greater than 0, got {b:g}", "for example --beta 3e-5,1e-4,3e-4")
    if max_drop < 0:
        raise InputError(f"--max-drop must be 0 or more top-1 points, got {max_drop:g}", "for example --max-drop 1.0")
    if not cuts:
        raise InputError("--bottleneck needs a cut", "name one with --cut C (repeat --cut to compare cuts)")
    for cut in cuts:
        model.cut_index(cut)  # unknown cut -> error naming the valid ones
    with torch.no_grad():
        h = model.make_input(1, model.default_seq_len and 16)
        crossing = {}
        for name, seg in zip(model.cuts, model.segments):
            h = seg.module(h)
            crossing[name] = h
    for cut in cuts:
        t = crossing[cut]
        if not isinstance(t, torch.Tensor) or t.dim() != 4 or not t.is_floating_point():
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else f"{type(t).__name__} of {len(t)} tensors"
            raise InputError(f"cut '{cut}' of {model.name} has no bottleneck-capable tensor (it carries {shape}; "
                             "the bottleneck needs one float N x C x H x W activation)",
                             "choose a cut after a convolutional block of an image classifier, e.g. --cut block12")
    if model.task != "image-classification":
        raise InputError(f"--bottleneck trains on labelled images; {model.name} is a {model.task} model",
                         "use an image classifier such as zoo:efficientnet-lite0")
    return check_image_data(data)


def parse_betas(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--beta: cannot read '{text}' as numbers", "for example --beta 3e-5,1e-4,3e-4") from None


def interpolate_bytes_at(curve: list[tuple[float, float]], agreement: float) -> float | None:
    """Bytes a rate-agreement curve [(bytes, agreement)] needs to reach ``agreement``: the cheapest
    point at or above it, or log-linear interpolation between neighbours on its upper envelope."""
    pts = sorted(curve)
    envelope: list[tuple[float, float]] = []
    for b, a in pts:  # keep points that beat every cheaper one
        if not envelope or a > envelope[-1][1]:
            envelope.append((b, a))
    if not envelope or agreement > envelope[-1][1]:
        return None
    if agreement <= envelope[0][1]:
        return envelope[0][0]
    for (b0, a0), (b1, a1) in zip(envelope, envelope[1:]):
        if a0 < agreement <= a1:
            w = (agreement - a0) / (a1 - a0)
            return float(np.exp(np.log(b0) + w * (np.log(b1) - np.log(b0))))
    return None


def _server(model: SegmentedModel, index: int) -> nn.Module:
    return nn.Sequential(*[s.module for s in model.segments[index + 1:]]).eval()


@torch.no_grad()
def _codec_times(point: TrainedPoint, feats: CutFeatures, count: int = 20) -> tuple[float, float]:
    """Median ms to encode (transform + range code) and decode one input on this machine."""
    enc, dec = point.codec.device_module(), point.codec.server_module()
    te, td = [], []
    for i in range(min(count, len(feats.eval_x))):
        x = feats.eval_x[i:i + 1]
        t0 = time.perf_counter()
        data = point.codec.pack(enc(x).numpy())
        t1 = time.perf_counter()
        dec(torch.from_numpy(point.codec.unpack(data)))
        te.append(t1 - t0)
        td.append(time.perf_counter() - t1)
    return statistics.median(te) * 1e3, statistics.median(td) * 1e3


def run_bottleneck(model: SegmentedModel, cuts: list[str], betas: list[float], data: Path | None = None,
                   settings: TrainSettings | None = None, max_drop: float = 1.0, exits: list[str] | None = None,
                   device_ms: list[float] | None = None, server_ms: list[float] | None = None,
                   links: list[Link] | None = None, baselines: bool = True, progress: Progress | None = None) -> BottleneckRun:
    """Train and measure every (cut, beta); fit exits; with per-segment latencies and links, choose."""
    root = check_bottleneck_settings(model, cuts, betas, max_drop, data)
    settings = settings or TrainSettings()
    links = links or []
    run = BottleneckRun(report=None)  # type: ignore[arg-type]
    points: list[RatePoint] = []
    base: list[BaselinePoint] = []
    feats_by_cut: dict[str, CutFeatures] = {}
    for cut in cuts:
        index = model.cut_index(cut)
        if progress:
            progress(f"features at {cut}", 0, 1)
        feats = feats_by_cut[cut] = cut_features(model, index, root)
        server = _server(model, index)
        fisher = task_fisher(server, feats.train_x, settings.fisher_samples, seed=settings.seed, patch=settings.patch)
        uniform = uniform_baselines(server, feats) if baselines else []
        if baselines:
            base += [BaselinePoint(**vars(b)) for b in activation_baselines(server, feats) + uniform]
        curve = [(b.bytes_per_input, b.agreement) for b in uniform]
        for beta in betas:
            point = train_bottleneck(server, feats, beta, settings, progress=progress, fisher=fisher)
            run.trained[(cut, beta)] = point
            enc_ms, dec_ms = _codec_times(point, feats)
            points.append(RatePoint(
                cut=cut, beta=beta, bytes_per_input=point.bytes_per_input,
                estimated_bytes_per_input=point.estimated_bytes_per_input, metric=point.metric,
                agreement=point.agreement, kl=point.kl, train_seconds=point.seconds, encode_ms=enc_ms,
                decode_ms=dec_ms, uniform_bytes_at_equal_agreement=interpolate_bytes_at(curve, point.agreement),
                latency_ms={lk.name: _split_latency(model, index, point.bytes_per_input, enc_ms, dec_ms, device_ms,
                                                    server_ms, lk) for lk in links} if device_ms else {},
            ))
    first = feats_by_cut[cuts[0]]
    if baselines:
        base = [BaselinePoint(**vars(b)) for b in jpeg_baselines(model.whole, root, first)] + base
    reference = float((first.eval_logits.argmax(-1) == first.eval_labels).float().mean())
    exit_list, run.exits = exit_points(model, first, exits or [], max_drop)
    chosen = _choose(model, points, exit_list, reference, max_drop, device_ms, links) if device_ms else []
    run.report = BottleneckReport(
        model=model.spec, data=str(root), train_inputs=len(first.train_x), eval_inputs=len(first.eval_x),
        reference_metric=reference, max_drop=max_drop, points=points, baselines=base, exits=exit_list,
        chosen=chosen, links=[lk.name for lk in links])
    return run


def exit_points(model: SegmentedModel, feats: CutFeatures, exits: list[str], max_drop: float
                ) -> tuple[list[ExitPoint], dict[str, ExitResult]]:
    """Fit and calibrate a head per exit cut; report it with the share of MACs it saves."""
    if not exits:
        return [], {}
    from aiflow_cli.profiling.measure import segment_macs

    macs = segment_macs(model, model.make_input(1, None))
    classifier = classifier_of(model)
    points, results = [], {}
    for cut in exits:
        result = results[cut] = train_exit(feats, cut, classifier, max_drop)
        skipped = sum(macs[model.cut_index(cut) + 1:]) / sum(macs)
        points.append(ExitPoint(
            cut=cut, threshold=result.threshold, calibration_drop=result.calibration_drop,
            exit_rate=result.exit_rate, exit_accuracy=result.exit_accuracy, metric=result.metric,
            drop=result.drop, agreement=result.agreement, compute_saved=result.exit_rate * skipped))
    return points, results


def _split_latency(model: SegmentedModel, index: int, nbytes: float, enc_ms: float, dec_ms: float,
                   device_ms: list[float] | None, server_ms: list[float] | None, link: Link) -> float:
    assert device_ms is not None and server_ms is not None
    return (sum(device_ms[: index + 1]) + enc_ms + nbytes / link.up_rate * 1e3 + link.rtt_ms
            + sum(server_ms[index + 1:]) + dec_ms + 4000 / link.down_rate * 1e3)  # result: 1000 fp32 logits


def _choose(model: SegmentedModel, points: list[RatePoint], exits: list[ExitPoint], reference: float,
            max_drop: float, device_ms: list[float], links: list[Link]) -> list[JointChoice]:
    """Per link: the fastest (cut, beta, exit-or-none) whose top-1 stays within max_drop points.

    With an exit at cut e (on the device, so e <= the split cut) firing with probability p,
    expected latency = p * device(0..e) + (1 - p) * split latency; the accuracy drops of the exit
    and of the bottleneck add (a conservative bound: they can also overlap).
    """
    out = []
    for lk in links:
        # Running everything on the device is always a candidate: no link, no accuracy cost.
        best = JointChoice(link=lk.name, cut="device-only", beta=None, exit=None, bytes_per_input=0.0,
                           metric=reference, drop=0.0, expected_latency_ms=sum(device_ms))
        for p in points:
            p_drop = 100 * (reference - p.metric)
            options: list[tuple[ExitPoint | None, float, float]] = [(None, p.latency_ms[lk.name], p_drop)]
            for e in exits:
                if model.cut_index(e.cut) <= model.cut_index(p.cut):
                    early = sum(device_ms[: model.cut_index(e.cut) + 1])
                    options.append((e, e.exit_rate * early + (1 - e.exit_rate) * p.latency_ms[lk.name],
                                    p_drop + max(0.0, e.drop)))
            for e, latency, drop in options:
                if drop <= max_drop + 1e-9 and latency < best.expected_latency_ms:
                    best = JointChoice(link=lk.name, cut=p.cut, beta=p.beta, exit=e.cut if e else None,
                                       bytes_per_input=p.bytes_per_input, metric=p.metric, drop=drop,
                                       expected_latency_ms=latency)
        out.append(best)
    return out
