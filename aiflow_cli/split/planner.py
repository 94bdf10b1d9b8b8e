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
from aiflow_cli.split.cost import CostInputs, Link, SideCost, candidates, plan_table

__all__ = ["SplitResult", "HostProfile", "SideLatency", "check_profile_matches", "check_stable", "side_latencies",
           "plan_split"]


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


@dataclass(frozen=True)
class SideLatency:
    cost: SideCost
    node: NodeInfo


def check_stable(report: ProfileReport, where: Path | str, accept_unstable: bool) -> None:
    """Refuse a profile whose timings a busy machine spoiled, unless the user insists."""
    if report.stability.stable or accept_unstable:
        return
    from aiflow_cli.profiling.measure import STABILITY_ADVICE

    raise ConfigError(f"{where}: timings flagged unstable ({'; '.join(report.stability.warnings)})",
                      f"{STABILITY_ADVICE}, or pass --force to use them anyway")


def side_latencies(path: Path, model: SegmentedModel, host: Callable[[], ProfileReport], kind: str,
                   accept_unstable: bool = False) -> SideLatency:
    """Per-segment latency (ms) for one side, its per-call overhead, and where they came from."""
    path = Path(path)
    if path.suffix == ".json":
        report = load_profile(path)
        check_profile_matches(report, model, path)
        check_stable(report, path, accept_unstable)
        return SideLatency(SideCost(report.compute_latencies_ms(), report.total.call_overhead_ms), NodeInfo(
            name=f"{report.host.cpu} ({report.settings.runtime})", kind=kind, source="measured", file=str(path)))
    hw = load_compute(path)
    proj = project(host(), hw, measure_host_roofline())
    return SideLatency(SideCost([s.latency_ms for s in proj.segments]),
                       NodeInfo(name=hw.name, kind=kind, source="projected", file=str(path)))


class HostProfile:
    """This machine's profile of the model, needed only to project hardware YAML: loaded from
    ``path`` (checked to be of this model) or measured, once, on first call."""

    def __init__(self, model: SegmentedModel, path: Path | None, measure: Callable[[], ProfileReport] | None,
                 accept_unstable: bool = False) -> None:
        self.model, self.path, self.measure, self.accept_unstable = model, path, measure, accept_unstable
        self.report: ProfileReport | None = None

    def __call__(self) -> ProfileReport:
        if self.report is None:
            if self.path is not None:
                self.report = load_profile(self.path)
                check_profile_matches(self.report, self.model, self.path)
                check_stable(self.report, self.path, self.accept_unstable)
            elif self.measure is not None:
                self.report = self.measure()
                check_stable(self.report, "the profile measured now", self.accept_unstable)
            else:
                raise ConfigError("a hardware YAML needs a profile of this machine to project from",
                                  "pass --profile FILE (aiflow profile MODEL --out FILE)")
        return self.report


def plan_split(model: SegmentedModel, device: Path, server: Path, links: list[Link], codec: str = "fp32",
               host_profile: Path | None = None, measure: Callable[[], ProfileReport] | None = None,
               accept_unstable: bool = False) -> SplitResult:
    host = HostProfile(model, host_profile, measure, accept_unstable)
    dev = side_latencies(device, model, host, "device", accept_unstable)
    srv = side_latencies(server, model, host, "server", accept_unstable)
    reference = host.report or (load_profile(device) if Path(device).suffix == ".json" else host())
    codecs = evaluate_codec(model, codec)
    fp32_cut_bytes = reference.cut_bytes()
    costs = CostInputs(
        cuts=model.cuts, device=dev.cost, server=srv.cost,
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
    plan = SplitPlan(model=model.spec, model_fingerprint=model.fingerprint(), codec=codec, device=dev.node,
                     server=srv.node, links=link_plans, plan_table=plan_table(costs, links[0].rtt_ms),
                     plan_table_rtt_ms=links[0].rtt_ms)
    return SplitResult(plan=plan, costs=costs, codecs=codecs, host_profile=reference)
