"""The library call behind ``aiflow split``: plan (optional) and export (optional)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from aiflow_cli.errors import InputError
from aiflow_cli.models import load_model
from aiflow_cli.onnx_io import check_exporter
from aiflow_cli.schemas.manifest import Manifest, PairCost
from aiflow_cli.split.cost import DEVICE_ONLY, SERVER_ONLY, Link
from aiflow_cli.split.planner import SplitResult, plan_split

__all__ = ["SplitOutcome", "run_split"]


@dataclass
class SplitOutcome:
    result: SplitResult | None
    manifest: Manifest | None


def run_split(spec: str, device: Path | None, server: Path | None, links: list[Link], codec: str = "fp32",
              host_profile: Path | None = None, cuts: list[str] | None = None, export_dir: Path | None = None,
              force: bool = False, triton: bool = True, verify_count: int = 50, trust_remote_code: bool = False,
              progress: Callable[[str, int, int], None] | None = None, accept_unstable: bool = False,
              device_runtime: str | None = None, server_runtime: str | None = None,
              server_batches: list[int] | None = None, requests_per_device: float = 30.0,
              sensitivity: bool = False, exporter: str = "dynamo") -> SplitOutcome:
    from aiflow_cli.codecs import make_codec
    from aiflow_cli.staging import check_output_dir

    make_codec(codec)
    exporter = check_exporter(exporter)
    if verify_count < 1:
        raise InputError(f"--verify-count must be at least 1, got {verify_count}", "for example --verify-count 50")
    if (device is None) != (server is None):
        raise InputError("--device and --server go together", "pass both, or neither to export named --cut values")
    if device is not None and not links:
        raise InputError("no link given", "pass --link FILE.yaml or --bandwidth 0.5MB/s,1MB/s --rtt 20ms")
    if device is None and (device_runtime or server_runtime or server_batches or sensitivity):
        raise InputError("--device-runtime, --server-runtime, --server-batch and --sensitivity need a plan",
                         "pass --device, --server and --link")
    if device is None and not (export_dir and cuts):
        raise InputError("nothing to do", "pass --device/--server/--link to plan, or --cut C --export DIR to export")
    if export_dir is not None:
        check_output_dir(export_dir, force)
    model = load_model(spec, trust_remote_code=trust_remote_code)
    if model.task == "causal-lm" and codec != "fp32" and export_dir is not None:
        raise InputError(f"codec '{codec}' is not available for KV-cached causal-LM pairs yet", "use --codec fp32")
    for cut in cuts or []:
        model.cut_index(cut)

    result = None
    if device is not None:
        from aiflow_cli.profiling.measure import profile_model

        result = plan_split(model, device, server, links, codec, host_profile,
                            measure=lambda: profile_model(model, repeats=10, warmup=2, progress=progress),
                            accept_unstable=accept_unstable, device_runtime=device_runtime,
                            server_runtime=server_runtime, server_batches=server_batches,
                            requests_per_device=requests_per_device, capacity_cuts=cuts, sensitivity=sensitivity)
    manifest = None
    if export_dir is not None:

        chosen = list(cuts or [])
        if not chosen and result is not None:
            chosen = [lp.best_cut for lp in result.plan.links if lp.best_cut not in (DEVICE_ONLY, SERVER_ONLY)]
            chosen = list(dict.fromkeys(chosen))
            if not chosen:
                raise InputError("the best plan for every link runs on one side only: nothing to split",
                                 "name a cut with --cut to export it anyway")
        if model.task == "causal-lm":
            from aiflow_cli.export.lm_pair import export_lm_split

            manifest = export_lm_split(model, chosen, export_dir, force=force, progress=progress, exporter=exporter)
        else:
            manifest = _export(model, chosen, codec, result, export_dir, force, triton, verify_count, progress,
                               exporter)
    return SplitOutcome(result=result, manifest=manifest)


def _export(model, chosen, codec, result, export_dir, force, triton, verify_count, progress, exporter):  # noqa: ANN001, ANN202
    from aiflow_cli.export.api import export_split
    from aiflow_cli.split.codec_eval import evaluate_codec

    if result is not None:
        by_cut = {c.cut: c for c in result.codecs}
    else:
        by_cut = {c.cut: c for c in evaluate_codec(model, codec, cut_indices=[model.cut_index(c) for c in chosen])}
    predicted, sent, costs = {}, {}, {}
    if result is not None:
        inputs, n = result.costs, len(model.cuts) + 1
        for cut in chosen:
            i = model.cut_index(cut)
            predicted[cut] = {lp.name: next(x.total_ms for x in lp.candidates if x.cut == cut) for lp in result.plan.links}
            sent[cut] = inputs.cut_bytes[i]
            costs[cut] = PairCost(device_ms=inputs.device.span_ms(0, i + 1), encode_ms=inputs.encode_ms[i],
                                  bytes=inputs.cut_bytes[i], server_ms=inputs.server.span_ms(i + 1, n),
                                  decode_ms=inputs.decode_ms[i], result_bytes=inputs.result_bytes,
                                  device_source=result.plan.device.source, server_source=result.plan.server.source)
    return export_split(model, chosen, {c: by_cut[c].codec for c in chosen}, export_dir, force=force, triton=triton,
                        verify_count=verify_count, predicted=predicted, bytes_per_request=sent, costs=costs,
                        plan_table=[r.model_dump() for r in result.plan.plan_table] if result else None,
                        progress=progress, exporter=exporter)
