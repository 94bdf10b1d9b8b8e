"""``aiflow split --bottleneck`` from the command line's point of view: resolve files, run, export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from aiflow_cli.errors import InputError
from aiflow_cli.schemas.bottleneck import BottleneckReport
from aiflow_cli.schemas.manifest import Manifest
from aiflow_cli.split.bottleneck.api import check_bottleneck_settings, parse_betas, run_bottleneck
from aiflow_cli.split.bottleneck.train import TrainSettings

__all__ = ["BottleneckOutcome", "bottleneck_split", "exits_only"]


@dataclass
class BottleneckOutcome:
    report: BottleneckReport
    manifest: Manifest | None = None
    exported_beta: float | None = None


def bottleneck_split(spec: str, cuts: list[str], beta: str, data: Path | None, max_drop: float = 1.0,
                     exits: list[str] | None = None, finetune_server: bool = False, epochs: int = 4, patch: int = 1,
                     device: Path | None = None, server: Path | None = None, link: list[Path] | None = None,
                     bandwidth: str | None = None, rtt: str | None = None, host_profile: Path | None = None,
                     export_dir: Path | None = None, force: bool = False,
                     progress: Callable[[str, int, int], None] | None = None) -> BottleneckOutcome:
    from aiflow_cli.models import load_model
    from aiflow_cli.split.links import resolve_links

    betas = parse_betas(beta)
    if (device is None) != (server is None):
        raise InputError("--device and --server go together", "pass both, or neither")
    links = resolve_links(link or [], bandwidth, rtt) if (link or bandwidth) else []
    if device is not None and not links:
        raise InputError("no link given", "pass --link FILE.yaml or --bandwidth 0.5MB/s,1MB/s --rtt 20ms")
    if export_dir is not None:
        from aiflow_cli.export.api import check_export_dir

        check_export_dir(export_dir, force)
        if finetune_server:
            raise InputError("--export with --finetune-server is not available yet",
                             "export without --finetune-server (the server half stays frozen)")
    model = load_model(spec)
    check_bottleneck_settings(model, cuts, betas, max_drop, data)
    for e in exits or []:
        model.cut_index(e)
    device_ms = server_ms = None
    if device is not None:
        from aiflow_cli.profiling.measure import profile_model
        from aiflow_cli.split.planner import HostProfile, side_latencies

        host = HostProfile(model, host_profile, lambda: profile_model(model, repeats=10, warmup=2, progress=progress))
        device_ms, _ = side_latencies(device, model, host, "device")
        server_ms, _ = side_latencies(server, model, host, "server")
    settings = TrainSettings(epochs=epochs, finetune_server=finetune_server, patch=patch)
    run = run_bottleneck(model, cuts, betas, data, settings=settings, max_drop=max_drop, exits=exits,
                         device_ms=device_ms, server_ms=server_ms, links=links, progress=progress)
    outcome = BottleneckOutcome(report=run.report)
    if export_dir is not None:
        from aiflow_cli.export.api import export_split

        report = run.report
        split_choices = [c for c in report.chosen if c.beta is not None]
        if split_choices:
            pick = (split_choices[0].cut, split_choices[0].beta)
        else:  # fewest bytes within --max-drop, else the most accurate point
            ok = [p for p in report.points if 100 * (report.reference_metric - p.metric) <= max_drop]
            best = min(ok, key=lambda p: p.bytes_per_input) if ok else max(report.points, key=lambda p: p.metric)
            pick = (best.cut, best.beta)
        point = run.trained[pick]
        index = model.cut_index(pick[0])
        heads = [(e.cut, run.exits[e.cut].head, {"threshold": e.threshold, "exit_rate": e.exit_rate, "drop": e.drop})
                 for e in report.exits if model.cut_index(e.cut) <= index]  # later exits would run on the server
        outcome.manifest = export_split(model, [pick[0]], {pick[0]: point.codec}, export_dir, force=force,
                                        progress=progress, exits={pick[0]: heads})
        outcome.exported_beta = pick[1]
    return outcome


def exits_only(spec: str, exits: list[str], max_drop: float = 1.0, data: Path | None = None,
               progress: Callable[[str, int, int], None] | None = None) -> BottleneckReport:
    """Early exits without a bottleneck: image classifiers (pool + linear into the shared classifier,
    ImageNet sample) or causal LMs (final norm + shared LM head, WikiText-2 valid / test)."""
    from aiflow_cli.models import load_model

    if max_drop < 0:
        raise InputError(f"--max-drop must be 0 or more top-1 points, got {max_drop:g}", "for example --max-drop 1.0")
    model = load_model(spec)
    for e in exits:
        model.cut_index(e)
    if model.task == "causal-lm":
        from aiflow_cli.data.text import wikitext_path
        from aiflow_cli.split.bottleneck.lm_exits import lm_exit_points

        reference, tokens, points = lm_exit_points(model, exits, max_drop, progress=progress)
        return BottleneckReport(model=model.spec, data=str(wikitext_path("test").parent), train_inputs=8192,
                                eval_inputs=tokens, reference_metric=reference, max_drop=max_drop, points=[],
                                baselines=[], exits=points)
    if model.task != "image-classification":
        raise InputError(f"early exits are available for image classifiers and causal LMs; {model.name} is a "
                         f"{model.task} model", "use zoo:efficientnet-lite0 or zoo:smollm2-135m")
    from aiflow_cli.split.bottleneck.api import exit_points
    from aiflow_cli.split.bottleneck.features import check_image_data, cut_features

    root = check_image_data(data)
    feats = cut_features(model, model.cut_index(exits[0]), root)
    reference = float((feats.eval_logits.argmax(-1) == feats.eval_labels).float().mean())
    points, _ = exit_points(model, feats, exits, max_drop)
    return BottleneckReport(model=model.spec, data=str(root), train_inputs=len(feats.train_x),
                            eval_inputs=len(feats.eval_x), reference_metric=reference, max_drop=max_drop, points=[],
                            baselines=[], exits=points)
