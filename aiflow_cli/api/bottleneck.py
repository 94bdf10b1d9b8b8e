"""``train_bottleneck()`` and ``measure_exits()``: the learned, entropy-coded bottleneck at a cut (with
its baselines, early exits, predicted latency and export), and early exits on their own."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from pydantic import Field, field_validator, model_validator

from aiflow_cli.api.split import ExportOptions, Targets
from aiflow_cli.errors import InputError
from aiflow_cli.settings import Settings, split_list
from aiflow_cli.split.bottleneck.defaults import (
    AUGMENT,
    EPOCHS,
    IMAGE_BETAS,
    JPEG_QUALITIES,
    MAX_DROP,
    PATCH,
    SHRINKAGE,
    TEXT_BETAS,
    TEXT_MIN_FIDELITY,
)

if TYPE_CHECKING:
    from aiflow_cli.codecs.learned import LearnedBottleneckCodec
    from aiflow_cli.models.segmented import SegmentedModel
    from aiflow_cli.schemas.bottleneck import BottleneckReport
    from aiflow_cli.schemas.manifest import Manifest
    from aiflow_cli.schemas.text_bottleneck import TextBottleneckReport

__all__ = ["BottleneckSettings", "BottleneckOutcome", "train_bottleneck", "ExitsSettings", "measure_exits"]

Progress = Callable[[str, int, int], None]


def _betas(text: tuple[float, ...]) -> str:
    return ",".join(f"{b:g}" for b in text)


class _Data(Settings):
    data: Optional[list[Path]] = Field(None, description="Image folder with labels.csv and images/ (repeatable; "
                                                         "default: imagenet-sample and imagenet-val under ../shared/data). "
                                                         "Split by class: class_index % 5 == 0 test, == 1 validation, "
                                                         "else train.")
    max_drop: float = Field(MAX_DROP, description="Allowed top-1 drop in points: the operating point is the fewest "
                                                  "validation bytes whose drop on the training images and validation "
                                                  "together, one standard error up, is within it (never test); exits "
                                                  "and --auto keep within it too.")
    exits: list[str] = Field(default_factory=list, description="Early-exit head at this cut (repeatable).")

    flags = {"exits": "--exit"}

    @field_validator("max_drop")
    @classmethod
    def _max_drop(cls, value: float) -> float:
        from aiflow_cli.split.bottleneck.api import check_max_drop

        check_max_drop(value)
        return value


class BottleneckSettings(_Data, Targets, ExportOptions):
    model: str = Field(description="An image classifier, a causal LM or a sentence encoder (as for profile).")
    cut: list[str] = Field(default_factory=list, description="Cut to train the bottleneck at (repeatable: compare cuts).")
    beta: Optional[list[float]] = Field(None, description="Rate weights to train, comma-separated (larger = fewer "
                                                          f"bytes). Default: {_betas(IMAGE_BETAS)} for images, "
                                                          f"{_betas(TEXT_BETAS['next-token'])} for causal LMs, "
                                                          f"{_betas(TEXT_BETAS['sentence-embedding'])} for sentence "
                                                          "encoders.")
    min_fidelity: Optional[float] = Field(None, description="On a text model: the fidelity the operating point keeps "
                                                            "on validation (next-token agreement for causal LMs, default "
                                                            f"{TEXT_MIN_FIDELITY['next-token']}; embedding cosine for "
                                                            "sentence encoders, default "
                                                            f"{TEXT_MIN_FIDELITY['sentence-embedding']}).")
    auto: bool = Field(False, description="Search every --cut x --beta (x --exit) for the fastest plan per link.")
    jpeg_quality: list[int] = Field(list(JPEG_QUALITIES), description="JPEG upload qualities to compare against, "
                                                                      "comma-separated (1-95).")
    finetune_server: bool = Field(False, description="Also tune the server half (default: frozen).")
    epochs: int = Field(EPOCHS, ge=1, le=1000, description="Training epochs per beta.")
    augment: int = Field(AUGMENT, ge=0, le=64, description="Augmented views (random resized crops, flips) per training "
                                                           "image added to the codec's training data (0: none; at block13 "
                                                           "4 views cost 2-3x the training time and did not lower the "
                                                           "test drop).")
    target_bytes: Optional[float] = Field(None, gt=0, description="Bytes per image to aim for; beta is searched on "
                                                                  "validation (--refine extra trainings per cut) and the "
                                                                  "most accurate point within it is the operating point.")
    refine: Optional[int] = Field(None, ge=0, le=16, description="Extra trainings per cut that move beta toward "
                                                                 "--target-bytes, or without it toward the largest beta "
                                                                 "within --max-drop (default: 2 with --target-bytes, "
                                                                 "else 0).")
    patch: int = Field(PATCH, ge=1, le=4, description="Transform p x p blocks of the activation, so the codec uses "
                                                      "neighbouring positions' correlation (blocks over an odd edge get "
                                                      "their own transform); docs/benchmarks.md gives the figures "
                                                      "behind the default.")
    shrinkage: float = Field(SHRINKAGE, ge=0, le=1, description="On images: pull the transform's covariance and "
                                                                "Fisher estimates toward their diagonals (0-1), so the "
                                                                "codec fits the training images less.")

    @field_validator("beta", mode="before")
    @classmethod
    def _beta(cls, value: object) -> object:
        if value is None:
            return None
        try:
            betas = [float(b) for b in split_list(value)]
        except (TypeError, ValueError):
            raise InputError(f"--beta: cannot read '{value}' as numbers", "for example --beta 3e-5,1e-4,3e-4") from None
        from aiflow_cli.split.bottleneck.api import check_betas

        check_betas(betas)
        return betas

    @field_validator("jpeg_quality", mode="before")
    @classmethod
    def _qualities(cls, value: object) -> object:
        try:
            qualities = [int(q) for q in split_list(value)]
        except (TypeError, ValueError):
            raise InputError(f"--jpeg-quality: cannot read '{value}' as whole numbers",
                             "for example --jpeg-quality 50,90,95") from None
        if not qualities or any(not 1 <= q <= 95 for q in qualities):
            raise InputError(f"--jpeg-quality: qualities run from 1 to 95, got '{value}'",
                             "for example --jpeg-quality 50,90,95")
        return qualities

    @field_validator("min_fidelity")
    @classmethod
    def _fidelity(cls, value: Optional[float]) -> Optional[float]:
        if value is not None and not 0 < value <= 1:
            raise InputError(f"--min-fidelity must be in (0, 1], got {value:g}", "for example --min-fidelity 0.95")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "BottleneckSettings":
        if self.auto and (self.device is None or not (self.link or self.bandwidth)):
            raise InputError("--auto needs --device, --server and a link to predict latency",
                             "add --device D --server S --bandwidth 1MB/s --rtt 20ms (or --link FILE)")
        if self.device is not None and not (self.link or self.bandwidth):
            raise InputError("no link given", "pass --link FILE.yaml or --bandwidth 0.5MB/s,1MB/s --rtt 20ms")
        if self.export is not None and self.finetune_server:
            raise InputError("--export with --finetune-server is not available yet",
                             "export without --finetune-server (the server half stays frozen)")
        return self


@dataclass
class BottleneckOutcome:
    report: "BottleneckReport | TextBottleneckReport"
    manifest: "Manifest | None" = None
    exported_beta: float | None = None


def train_bottleneck(settings: BottleneckSettings, progress: Progress | None = None) -> BottleneckOutcome:
    """Image classifiers: the full study (baselines, exits, links, export). Causal LMs and sentence
    encoders: the per-token study (bytes per token against fidelity; a causal LM's pair exported)."""
    from aiflow_cli.models import load_model
    from aiflow_cli.split.bottleneck.text import TEXT_TASKS

    s = settings
    model = load_model(s.model)
    if s.export is not None:
        from aiflow_cli.staging import check_output_dir

        check_output_dir(s.export, s.force)
    if model.task in TEXT_TASKS:
        return _text(model, s, progress)
    if s.min_fidelity is not None:
        raise InputError("--min-fidelity is for text models", "for image classifiers use --max-drop")
    return _image(model, s, progress)


def _text(model: "SegmentedModel", s: BottleneckSettings, progress: Progress | None) -> BottleneckOutcome:
    if s.device is not None or s.link or s.bandwidth or s.exits or s.target_bytes is not None:
        raise InputError(f"{model.name}: a text bottleneck is measured (and, for a causal LM, exported) only: no "
                         "--device/--link, --exit or --target-bytes yet", "drop those options; --min-fidelity "
                         "sets the bar")
    if s.export is not None and model.task != "causal-lm":
        raise InputError(f"{model.name}: --export of a text bottleneck is available for causal LMs only",
                         "measure without --export, or use zoo:smollm2-135m")
    if len(s.cut) != 1:
        raise InputError(f"a text bottleneck trains at one cut, got {len(s.cut)}", "pass one --cut, e.g. --cut layer15")
    report, codecs = text_bottleneck(model, s.cut[0], s.beta, s.min_fidelity, progress)
    outcome = BottleneckOutcome(report=report)
    if s.export is not None and report.operating_point is not None:
        from aiflow_cli.export.lm_pair import export_lm_split

        beta_chosen = report.operating_point.beta
        outcome.manifest = export_lm_split(model, [s.cut[0]], s.export, force=s.force, progress=progress,
                                           codecs={s.cut[0]: codecs[beta_chosen]}, exporter=s.exporter)
        outcome.exported_beta = beta_chosen
    return outcome


def text_bottleneck(model: "SegmentedModel", cut: str, betas: list[float] | None, min_fidelity: float | None,
                    progress: Progress | None = None
                    ) -> "tuple[TextBottleneckReport, dict[float, LearnedBottleneckCodec]]":
    """Train and measure per token at ``cut``; returns the report and the codec trained per beta."""
    from aiflow_cli.split.bottleneck.text import (
        default_min_fidelity,
        default_text_betas,
        run_text_bottleneck,
    )

    floor = default_min_fidelity(model) if min_fidelity is None else min_fidelity
    return run_text_bottleneck(model, cut, betas or list(default_text_betas(model)), floor, progress=progress)


def _image(model: "SegmentedModel", s: BottleneckSettings, progress: Progress | None) -> BottleneckOutcome:
    from aiflow_cli.split.bottleneck.api import (
        check_bottleneck_settings,
        run_bottleneck,
    )
    from aiflow_cli.split.bottleneck.train import TrainSettings

    betas = s.beta or list(IMAGE_BETAS)
    links = s.links() if (s.link or s.bandwidth) else []
    check_bottleneck_settings(model, s.cut, betas, s.max_drop, s.data)
    for e in s.exits:
        model.cut_index(e)
    device_side = server_side = device_source = server_source = None
    if s.device is not None:
        from aiflow_cli.profiling.measure import profile_model
        from aiflow_cli.split.planner import HostProfile, side_latencies

        host = HostProfile(model, s.profile, lambda: profile_model(model, repeats=10, warmup=2, progress=progress),
                           accept_unstable=s.force)
        dev = side_latencies(s.device, model, host, "device", accept_unstable=s.force)
        srv = side_latencies(s.server, model, host, "server", accept_unstable=s.force)
        device_side, server_side = dev.cost, srv.cost
        device_source, server_source = dev.node, srv.node
    train = TrainSettings(epochs=s.epochs, finetune_server=s.finetune_server, patch=s.patch, augment=s.augment,
                          shrinkage=s.shrinkage)
    refine = s.refine if s.refine is not None else (2 if s.target_bytes is not None else 0)
    run = run_bottleneck(model, s.cut, betas, s.data, settings=train, max_drop=s.max_drop, exits=s.exits,
                         jpeg_qualities=tuple(s.jpeg_quality), device=device_side, server=server_side, links=links,
                         progress=progress, target_bytes=s.target_bytes, refine=refine)
    outcome = BottleneckOutcome(report=run.report)
    if s.export is not None:
        outcome.manifest, outcome.exported_beta = _export_point(model, s, run, device_side, server_side,
                                                                (device_source, server_source), progress)
    return outcome


def _export_point(model, s: BottleneckSettings, run, device_side, server_side, sources: tuple,  # noqa: ANN001
                  progress: Progress | None) -> "tuple[Manifest, float]":
    """Export the chosen point: --auto's first link's split plan, else the operating point."""
    from aiflow_cli.export.api import export_split
    from aiflow_cli.schemas.manifest import PairCost

    report = run.report
    split_choices = [c for c in report.chosen if c.beta is not None]
    if split_choices:  # --auto: the first link's split plan
        pick = (split_choices[0].cut, split_choices[0].beta)
    elif report.operating_point is not None:  # fewest validation bytes within --max-drop on validation
        pick = (report.operating_point.cut, report.operating_point.beta)
    else:
        raise InputError("no bottleneck was trained, nothing to export", "pass --cut and --beta")
    point = run.trained[pick]
    index = model.cut_index(pick[0])
    by_cut = {e.cut: e for e in report.exits}
    heads = [(cut, result.head, {"threshold": result.threshold, "exit_rate": by_cut[cut].exit_rate.value,
                                 "drop": by_cut[cut].test.drop.points})
             for cut, result in run.exits.items() if model.cut_index(cut) <= index]  # later exits: on the server
    costs, predicted = {}, {}
    if device_side is not None and server_side is not None:
        rp = next(p for p in report.points if (p.cut, p.beta) == pick)
        n = len(model.cuts) + 1
        costs[pick[0]] = PairCost(device_ms=device_side.span_ms(0, index + 1), encode_ms=rp.encode_ms,
                                  bytes=round(rp.bytes_per_input), server_ms=server_side.span_ms(index + 1, n),
                                  decode_ms=rp.decode_ms, result_bytes=run.result_bytes,
                                  device_source=sources[0].source, server_source=sources[1].source,
                                  device_runtime=sources[0].runtime, server_runtime=sources[1].runtime)
        predicted[pick[0]] = dict(rp.latency_ms)
    manifest = export_split(model, [pick[0]], {pick[0]: point.codec}, s.export, force=s.force, progress=progress,
                            exits={pick[0]: heads}, costs=costs, predicted=predicted, exporter=s.exporter)
    return manifest, pick[1]


class ExitsSettings(_Data):
    model: str = Field(description="An image classifier (on --data) or a causal LM (on WikiText-2).")

    @model_validator(mode="after")
    def _some_exit(self) -> "ExitsSettings":
        if not self.exits:
            raise InputError("no exit given", "name one with --exit C (repeatable)")
        return self


def measure_exits(settings: ExitsSettings, progress: Progress | None = None) -> "BottleneckReport":
    """Early exits without a bottleneck: image classifiers (pool + linear into the shared classifier,
    ImageNet folders) or causal LMs (final norm + shared LM head, WikiText-2 valid / test)."""
    from aiflow_cli.models import load_model
    from aiflow_cli.schemas.bottleneck import BottleneckReport, DataSplit

    s = settings
    model = load_model(s.model)
    for e in s.exits:
        model.cut_index(e)
    if model.task == "causal-lm":
        from aiflow_cli.data.text import wikitext_path
        from aiflow_cli.split.bottleneck.lm_exits import LM_SPLIT_RULE, lm_exit_points

        lm = lm_exit_points(model, s.exits, s.max_drop, progress=progress)
        return BottleneckReport(
            model=model.spec, data=DataSplit(roots=[str(wikitext_path("test").parent)], rule=LM_SPLIT_RULE,
                                             train_inputs=lm.fit_tokens, validation_inputs=lm.calibration_tokens,
                                             test_inputs=lm.test_tokens),
            reference_validation=lm.reference_validation, reference_test=lm.reference_test, max_drop=s.max_drop,
            points=[], baselines=[], exits=lm.points)
    if model.task != "image-classification":
        raise InputError(f"early exits are available for image classifiers and causal LMs; {model.name} is a "
                         f"{model.task} model", "use zoo:efficientnet-lite0 or zoo:smollm2-135m")
    from aiflow_cli.data.imagenet import SPLIT_RULE
    from aiflow_cli.split.bottleneck.api import exit_points
    from aiflow_cli.split.bottleneck.features import check_image_data, cut_features
    from aiflow_cli.stats import share

    roots = check_image_data(s.data)
    feats = cut_features(model, None, roots)  # exits read pooled features only
    points, _ = exit_points(model, feats, s.exits, s.max_drop)
    return BottleneckReport(
        model=model.spec, data=DataSplit(roots=[str(r) for r in roots], rule=SPLIT_RULE, train_inputs=len(feats.train),
                                         validation_inputs=len(feats.validation), test_inputs=len(feats.test)),
        reference_validation=share(feats.validation.reference_correct.numpy()),
        reference_test=share(feats.test.reference_correct.numpy()), max_drop=s.max_drop, points=[], baselines=[],
        exits=points)
