"""``aiflow split --bottleneck`` from the command line's point of view: resolve files, run, export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from aiflow_cli.codecs.learned import LearnedBottleneckCodec
from aiflow_cli.errors import InputError
from aiflow_cli.models.segmented import SegmentedModel
from aiflow_cli.onnx_io import check_exporter
from aiflow_cli.schemas.bottleneck import BottleneckReport, DataSplit
from aiflow_cli.schemas.manifest import Manifest, PairCost
from aiflow_cli.schemas.text_bottleneck import TextBottleneckReport
from aiflow_cli.split.bottleneck.api import (
    check_betas,
    check_bottleneck_settings,
    check_max_drop,
    parse_betas,
    parse_jpeg_qualities,
    run_bottleneck,
)
from aiflow_cli.split.bottleneck.baselines import JPEG_QUALITIES
from aiflow_cli.split.bottleneck.text import (
    TEXT_TASKS,
    default_min_fidelity,
    default_text_betas,
    run_text_bottleneck,
)
from aiflow_cli.split.bottleneck.train import TrainSettings

__all__ = ["BottleneckOutcome", "bottleneck_split", "exits_only", "IMAGE_BETAS"]

IMAGE_BETAS = "7e-6,1e-5,1.5e-5,2e-5"  # EfficientNet-Lite0 blocks 12-15: about 1,400 to 900 B per image


@dataclass
class BottleneckOutcome:
    report: BottleneckReport | TextBottleneckReport
    manifest: Manifest | None = None
    exported_beta: float | None = None


def bottleneck_split(spec: str, cuts: list[str], beta: str | None, data: Path | list[Path] | None, max_drop: float = 1.0,
                     exits: list[str] | None = None, finetune_server: bool = False, epochs: int = 4, patch: int = 3,
                     jpeg_qualities: str | tuple[int, ...] = JPEG_QUALITIES, device: Path | None = None, server: Path | None = None, link: list[Path] | None = None,
                     bandwidth: str | None = None, rtt: str | None = None, host_profile: Path | None = None,
                     export_dir: Path | None = None, force: bool = False,
                     progress: Callable[[str, int, int], None] | None = None, augment: int = 0,
                     target_bytes: float | None = None, refine: int | None = None,
                     min_fidelity: float | None = None, exporter: str = "dynamo",
                     shrinkage: float = 0.2) -> BottleneckOutcome:
    """Image classifiers: the full study (baselines, exits, links, export). Causal LMs and sentence
    encoders: the per-token study of :func:`text_bottleneck` (``beta`` None: each kind's defaults)."""
    from aiflow_cli.models import load_model
    from aiflow_cli.split.links import resolve_links

    exporter = check_exporter(exporter)
    model = load_model(spec)
    if model.task in TEXT_TASKS:
        if device is not None or link or bandwidth or exits or target_bytes is not None:
            raise InputError(f"{model.name}: a text bottleneck is measured (and, for a causal LM, exported) only: no "
                             "--device/--link, --exit or --target-bytes yet", "drop those options; --min-fidelity "
                             "sets the bar")
        if export_dir is not None and model.task != "causal-lm":
            raise InputError(f"{model.name}: --export of a text bottleneck is available for causal LMs only",
                             "measure without --export, or use zoo:smollm2-135m")
        if len(cuts) != 1:
            raise InputError(f"a text bottleneck trains at one cut, got {len(cuts)}", "pass one --cut, e.g. --cut layer15")
        if export_dir is not None:
            from aiflow_cli.staging import check_output_dir

            check_output_dir(export_dir, force)
        report, codecs = text_bottleneck(model, cuts[0], beta, min_fidelity, progress)
        outcome = BottleneckOutcome(report=report)
        if export_dir is not None and report.operating_point is not None:
            from aiflow_cli.export.lm_pair import export_lm_split

            beta_chosen = report.operating_point.beta
            outcome.manifest = export_lm_split(model, [cuts[0]], export_dir, force=force, progress=progress,
                                               codecs={cuts[0]: codecs[beta_chosen]}, exporter=exporter)
            outcome.exported_beta = beta_chosen
        return outcome
    if min_fidelity is not None:
        raise InputError("--min-fidelity is for text models", "for image classifiers use --max-drop")
    betas = parse_betas(beta or IMAGE_BETAS)
    qualities = parse_jpeg_qualities(jpeg_qualities)
    if (device is None) != (server is None):
        raise InputError("--device and --server go together", "pass both, or neither")
    links = resolve_links(link or [], bandwidth, rtt) if (link or bandwidth) else []
    if device is not None and not links:
        raise InputError("no link given", "pass --link FILE.yaml or --bandwidth 0.5MB/s,1MB/s --rtt 20ms")
    if export_dir is not None:
        from aiflow_cli.staging import check_output_dir

        check_output_dir(export_dir, force)
        if finetune_server:
            raise InputError("--export with --finetune-server is not available yet",
                             "export without --finetune-server (the server half stays frozen)")
    check_bottleneck_settings(model, cuts, betas, max_drop, data)
    if augment < 0:
        raise InputError(f"--augment must be 0 or more, got {augment}", "for example --augment 4 (0: no augmented views)")
    if not 0 <= shrinkage <= 1:
        raise InputError(f"--shrinkage must be between 0 and 1, got {shrinkage:g}", "for example --shrinkage 0.2")
    for e in exits or []:
        model.cut_index(e)
    device_side = server_side = None
    device_source = server_source = ""
    if device is not None:
        from aiflow_cli.profiling.measure import profile_model
        from aiflow_cli.split.planner import HostProfile, side_latencies

        host = HostProfile(model, host_profile, lambda: profile_model(model, repeats=10, warmup=2, progress=progress),
                           accept_unstable=force)
        dev = side_latencies(device, model, host, "device", accept_unstable=force)
        srv = side_latencies(server, model, host, "server", accept_unstable=force)
        device_side, server_side = dev.cost, srv.cost
        device_source, server_source = dev.node.source, srv.node.source
    settings = TrainSettings(epochs=epochs, finetune_server=finetune_server, patch=patch, augment=augment,
                             shrinkage=shrinkage)
    if refine is None:  # a byte target needs a few trainings to reach; otherwise train the betas given
        refine = 2 if target_bytes is not None else 0
    run = run_bottleneck(model, cuts, betas, data, settings=settings, max_drop=max_drop, exits=exits,
                         jpeg_qualities=qualities, device=device_side, server=server_side, links=links,
                         progress=progress, target_bytes=target_bytes, refine=refine)
    outcome = BottleneckOutcome(report=run.report)
    if export_dir is not None:
        from aiflow_cli.export.api import export_split

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
                                      device_source=device_source, server_source=server_source)
            predicted[pick[0]] = dict(rp.latency_ms)
        outcome.manifest = export_split(model, [pick[0]], {pick[0]: point.codec}, export_dir, force=force,
                                        progress=progress, exits={pick[0]: heads}, costs=costs, predicted=predicted,
                                        exporter=exporter)
        outcome.exported_beta = pick[1]
    return outcome


def text_bottleneck(model: SegmentedModel, cut: str, beta: str | None, min_fidelity: float | None,
                    progress: Callable[[str, int, int], None] | None = None
                    ) -> tuple[TextBottleneckReport, dict[float, LearnedBottleneckCodec]]:
    """Train and measure per token at ``cut``; returns the report and the codec trained per beta."""
    betas = parse_betas(beta) if beta else list(default_text_betas(model))
    check_betas(betas)
    floor = default_min_fidelity(model) if min_fidelity is None else min_fidelity
    if not (0 < floor <= 1):
        raise InputError(f"--min-fidelity must be in (0, 1], got {floor:g}", "for example --min-fidelity 0.95")
    return run_text_bottleneck(model, cut, betas, floor, progress=progress)


def exits_only(spec: str, exits: list[str], max_drop: float = 1.0, data: Path | list[Path] | None = None,
               progress: Callable[[str, int, int], None] | None = None) -> BottleneckReport:
    """Early exits without a bottleneck: image classifiers (pool + linear into the shared classifier,
    ImageNet folders) or causal LMs (final norm + shared LM head, WikiText-2 valid / test)."""
    from aiflow_cli.models import load_model

    check_max_drop(max_drop)
    model = load_model(spec)
    for e in exits:
        model.cut_index(e)
    if model.task == "causal-lm":
        from aiflow_cli.data.text import wikitext_path
        from aiflow_cli.split.bottleneck.lm_exits import LM_SPLIT_RULE, lm_exit_points

        lm = lm_exit_points(model, exits, max_drop, progress=progress)
        return BottleneckReport(
            model=model.spec, data=DataSplit(roots=[str(wikitext_path("test").parent)], rule=LM_SPLIT_RULE,
                                             train_inputs=lm.fit_tokens, validation_inputs=lm.calibration_tokens,
                                             test_inputs=lm.test_tokens),
            reference_validation=lm.reference_validation, reference_test=lm.reference_test, max_drop=max_drop,
            points=[], baselines=[], exits=lm.points)
    if model.task != "image-classification":
        raise InputError(f"early exits are available for image classifiers and causal LMs; {model.name} is a "
                         f"{model.task} model", "use zoo:efficientnet-lite0 or zoo:smollm2-135m")
    from aiflow_cli.data.imagenet import SPLIT_RULE
    from aiflow_cli.split.bottleneck.api import exit_points
    from aiflow_cli.split.bottleneck.features import check_image_data, cut_features
    from aiflow_cli.stats import share

    roots = check_image_data(data)
    feats = cut_features(model, None, roots)  # exits read pooled features only
    points, _ = exit_points(model, feats, exits, max_drop)
    return BottleneckReport(
        model=model.spec, data=DataSplit(roots=[str(r) for r in roots], rule=SPLIT_RULE, train_inputs=len(feats.train),
                                         validation_inputs=len(feats.validation), test_inputs=len(feats.test)),
        reference_validation=share(feats.validation.reference_correct.numpy()),
        reference_test=share(feats.test.reference_correct.numpy()), max_drop=max_drop, points=[], baselines=[],
        exits=points)
