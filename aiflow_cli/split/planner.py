"""The one call behind ``aiflow split`` (planning): per-segment latencies for both sides, codec
bytes at every cut, every candidate ranked for every link, and the plan table.

A side is either a profile JSON measured on that machine (``measured``) or a hardware YAML,
projected from a profile of this machine (``projected``). A profile of another model is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from aiflow_cli.errors import ConfigError
from aiflow_cli.models.segmented import SegmentedModel
from aiflow_cli.profiling.roofline import measure_host_roofline, project
from aiflow_cli.schemas.hardware import load_compute
from aiflow_cli.schemas.plan import LinkPlan, NodeInfo, SplitPlan
from aiflow_cli.schemas.profile import ProfileReport, load_profile
from aiflow_cli.split.codec_eval import CutCodec, evaluate_codec
from aiflow_cli.split.cost import CostInputs, Link, candidates, plan_table

__all__ = ["SplitResult", "HostProfile", "check_profile_matches", "side_latencies", "plan_split"]


@dataclass
class SplitResult:
    plan: SplitPlan
    costs: CostInputs
    codecs: list[CutCodec]
    host_profile: ProfileReport


def check_profile_matches(report: ProfileReport, model: SegmentedModel, path: Path | str) -> None:
    if report.model.fingerprint != model.fingerprint() or report.cuts != model.cuts:
        raise ConfigError(
            f"{path}: profile was measured on model '{report.model.spec}' (fingerprint "
            f"{report.model.fingerprint[:12]}), not on '{model.spec}' ({model.fingerprint()[:12]})",
            f"run aiflow profile {model.spec} --out FILE on that machine",
        )


def side_latencies(path: Path, model: SegmentedModel, host: Callable[[], ProfileReport],
                   kind: str) -> tuple[list[float], NodeInfo]:
    """Per-segment latency (ms) for one side, and where it came from."""
    path = Path(path)
    if path.suffix == ".json":
        report = load_profile(path)
        check_profile_matches(report, model, path)
        return report.apportioned_latencies_ms(), NodeInfo(
            name=f"{report.host.cpu} ({report.settings.runtime})", kind=kind, source="measured", file=str(path))
    hw = load_compute(path)
    proj = project(host(), hw, measure_host_roofline())
    return [s.latency_ms for s in proj.segments], NodeInfo(name=hw.name, kind=kind, source="projected", file=str(path))


class HostProfile:
    """This machine's profile of the model, needed only to project hardware YAML: loaded from
    ``path`` (checked to be of this model) or measured, once, on first call."""

    def __init__(self, model: SegmentedModel, path: Path | None, measure: Callable[[], ProfileReport] | None) -> None:
        self.model, self.path, self.measure = model, path, measure
        self.report: ProfileReport | None = None

    def __call__(self) -> ProfileReport:
        if self.report is None:
            if self.path is not None:
                self.report = load_profile(self.path)
                check_profile_matches(self.report, self.model, self.path)
            else:
                assert self.measure is not None, "a host profile or a way to measure one is needed"
                self.report = self.measure()
        return self.report


def plan_split(model: SegmentedModel, device: Path, server: Path, links: list[Link], codec: str = "fp32",
               host_profile: Path | None = None, measure: Callable[[], ProfileReport] | None = None) -> SplitResult:
    host = HostProfile(model, host_profile, measure)
    dev_ms, dev_info = side_latencies(device, model, host, "device")
    srv_ms, srv_info = side_latencies(server, model, host, "server")
    reference = host.report or (load_profile(device) if Path(device).suffix == ".json" else host())
    codecs = evaluate_codec(model, codec)
    fp32_cut_bytes = reference.cut_bytes()
    costs = CostInputs(
        cuts=model.cuts, device_ms=dev_ms, server_ms=srv_ms,
        cut_bytes=[round(fp32_cut_bytes[c.cut] * c.ratio) for c in codecs],
        encode_ms=[c.encode_ms * reference.settings.batch for c in codecs],
        decode_ms=[c.decode_ms * reference.settings.batch for c in codecs],
        input_upload_bytes=reference.input_bytes.jpeg_q90 or reference.input_bytes.tokens or reference.input_bytes.raw,
        result_bytes=reference.segments[-1].out_bytes,
    )
    link_plans = []
    for link in links:
        ranked = candidates(costs, link)
        link_plans.append(LinkPlan(name=link.name, rate_bytes_per_s=link.up_rate, rtt_ms=link.rtt_ms,
                                   best_cut=ranked[0].cut, candidates=ranked))
    plan = SplitPlan(model=model.spec, model_fingerprint=model.fingerprint(), codec=codec, device=dev_info,
                     server=srv_info, links=link_plans, plan_table=plan_table(costs, links[0].rtt_ms),
                     plan_table_rtt_ms=links[0].rtt_ms)
    return SplitResult(plan=plan, costs=costs, codecs=codecs, host_profile=reference)
