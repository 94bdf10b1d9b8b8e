"""The one call behind ``aiflow split`` (planning): per-segment latencies for both sides, codec
bytes at every cut, every candidate ranked for every link, and the plan table.

A side is either a profile JSON measured on that machine (``measured``) or a hardware YAML,
projected from a profile of this machine (``projected``) under one of the runtimes the YAML
declares. A profile of another model is refused.

Two questions a plan also answers from the same projections: how many devices one server
sustains when it batches their requests (``server_batches``), and whether the cut choice survives
an assumed per-kernel figure being off by a factor (``sensitivity``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from aiflow_cli.errors import ConfigError, InputError
from aiflow_cli.models.segmented import SegmentedModel
from aiflow_cli.profiling.roofline import measure_host_roofline, project
from aiflow_cli.schemas.hardware import ComputeProfile, load_compute
from aiflow_cli.schemas.plan import (
    CapacityPoint,
    LinkPlan,
    NodeInfo,
    Sensitivity,
    SensitivityRow,
    ServerCapacity,
    SplitPlan,
)
from aiflow_cli.schemas.profile import ProfileReport, load_profile
from aiflow_cli.split.codec_eval import CutCodec, evaluate_codec
from aiflow_cli.split.cost import (
    DEVICE_ONLY,
    SERVER_ONLY,
    CostInputs,
    Link,
    SideCost,
    candidates,
    plan_table,
)

__all__ = ["SplitResult", "HostProfile", "SideLatency", "check_profile_matches", "check_stable", "side_latencies",
           "plan_split", "server_capacity", "kernel_sensitivity", "SENSITIVITY_FACTORS"]

SENSITIVITY_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)


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
    hardware: ComputeProfile | None = None  # projected sides: the YAML, to re-project at other batches or overheads


def check_stable(report: ProfileReport, where: Path | str, accept_unstable: bool) -> None:
    """Refuse a profile whose timings a busy machine spoiled, unless the user insists."""
    if report.stability.stable or accept_unstable:
        return
    from aiflow_cli.profiling.measure import STABILITY_ADVICE

    raise ConfigError(f"{where}: timings flagged unstable ({'; '.join(report.stability.warnings)})",
                      f"{STABILITY_ADVICE}, or pass --force to use them anyway")


def _projected_cost(report: ProfileReport, hw: ComputeProfile, runtime: str | None, batch: int | None = None
                    ) -> tuple[SideCost, str, bool]:
    proj = project(report, hw, measure_host_roofline(runtime=report.settings.runtime), runtime=runtime, batch=batch)
    return SideCost([s.latency_ms for s in proj.segments], proj.call_overhead_ms), proj.runtime, proj.runtime_assumed


SERVING_RUNTIME = "onnxruntime"  # what runs an exported pair on a CPU: the embedded engine and Triton's backend


def check_serving_runtime(report: ProfileReport, path: Path, kind: str, force: bool = False) -> None:
    """A CPU profile predicts the pair only if it timed the runtime that will serve it: PyTorch eager
    is about 2.5x slower than onnxruntime here on EfficientNet-Lite0, so a torch profile would be off
    by that factor on both sides, and the cut it chooses can change with it. ``--force`` plans anyway."""
    if force or report.settings.on != "cpu" or report.settings.runtime == SERVING_RUNTIME:
        return
    raise InputError(f"{path}: timed with {report.settings.runtime}, but --{kind}'s half will run in "
                     f"{SERVING_RUNTIME}", f"re-run aiflow profile MODEL --runtime {SERVING_RUNTIME} --out {path.name} "
                                           "(or pass --force to plan with these timings anyway)")


def side_latencies(path: Path, model: SegmentedModel, host: Callable[[], ProfileReport], kind: str,
                   accept_unstable: bool = False, runtime: str | None = None) -> SideLatency:
    """Per-segment latency (ms) for one side, its per-call overhead, and where they came from.
    ``runtime`` picks the target runtime of a hardware YAML (default: the YAML's own)."""
    path = Path(path)
    if path.suffix == ".json":
        if runtime is not None:
            raise InputError(f"--{kind}-runtime applies to a hardware YAML; {path} is a measured profile",
                             f"drop --{kind}-runtime (the profile's runtime is what was timed)")
        report = load_profile(path)
        check_profile_matches(report, model, path)
        check_stable(report, path, accept_unstable)
        check_serving_runtime(report, path, kind, accept_unstable)
        where = report.host.accelerator or report.host.cpu
        runtime_name = report.settings.runtime if report.settings.on == "cpu" else f"{report.settings.runtime} on cuda"
        return SideLatency(SideCost(report.compute_latencies_ms(), report.total.call_overhead_ms), NodeInfo(
            name=f"{where} ({report.settings.runtime})", kind=kind, source="measured", file=str(path),
            runtime=runtime_name))
    hw = load_compute(path)
    if hw.kind != kind:
        raise ConfigError(f"{path}: is a {hw.kind} profile, passed as --{kind}",
                          f"pass a file from profiles/{kind}s as --{kind}")
    hw.runtime(runtime)  # an undeclared runtime fails before anything is measured
    cost, runtime_name, assumed = _projected_cost(host(), hw, runtime)
    return SideLatency(cost, NodeInfo(name=hw.name, kind=kind, source="projected", file=str(path), runtime=runtime_name,
                                      runtime_assumed=assumed), hw)


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
               accept_unstable: bool = False, device_runtime: str | None = None, server_runtime: str | None = None,
               server_batches: list[int] | None = None, requests_per_device: float = 30.0, capacity_cuts: list[str] | None = None,
               sensitivity: bool = False) -> SplitResult:
    if server_batches and Path(server).suffix == ".json":
        raise InputError(f"--server-batch projects the server at other batch sizes; {server} is a measured profile",
                         "pass a hardware YAML as --server (profiles/servers)")
    if requests_per_device <= 0:
        raise InputError(f"--requests-per-device must be above 0, got {requests_per_device:g}")
    host = HostProfile(model, host_profile, measure, accept_unstable)
    dev = side_latencies(device, model, host, "device", accept_unstable, device_runtime)
    srv = side_latencies(server, model, host, "server", accept_unstable, server_runtime)
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
    if server_batches:
        cuts = capacity_cuts or list(dict.fromkeys(lp.best_cut for lp in link_plans if lp.best_cut != DEVICE_ONLY))
        plan.capacity = [server_capacity(reference, srv.hardware, server_runtime, cut, model.cuts, server_batches,
                                         requests_per_device) for cut in cuts]
    if sensitivity:
        plan.sensitivity = kernel_sensitivity(reference, costs, links, {"device": (dev, device_runtime),
                                                                        "server": (srv, server_runtime)})
    return SplitResult(plan=plan, costs=costs, codecs=codecs, host_profile=reference)


def server_capacity(report: ProfileReport, hw: ComputeProfile, runtime: str | None, cut: str, cuts: list[str],
                    batches: list[int], requests_per_device: float) -> ServerCapacity:
    """The server half after ``cut`` (``server-only``: the whole model) projected at each batch size:
    requests per second, and the devices that sustains at ``requests_per_device`` each."""
    if any(b < 1 for b in batches):
        raise InputError(f"--server-batch sizes must be at least 1, got {','.join(map(str, batches))}")
    if cut == SERVER_ONLY:
        first = 0
    elif cut in cuts:
        first = cuts.index(cut) + 1
    else:
        raise InputError(f"unknown cut '{cut}'", "choose one of: " + ", ".join(cuts))
    points, name = [], runtime
    for batch in batches:
        proj = project(report, hw, measure_host_roofline(runtime=report.settings.runtime), runtime=runtime, batch=batch)
        name = proj.runtime
        server_ms = sum(s.latency_ms for s in proj.segments[first:]) + proj.call_overhead_ms
        rate = batch / server_ms * 1e3
        points.append(CapacityPoint(batch=batch, server_ms=round(server_ms, 4), requests_per_s=round(rate, 1),
                                    devices=math.floor(rate / requests_per_device), fits_memory=proj.fits_memory))
    return ServerCapacity(cut=cut, runtime=name or "roofline", requests_per_device_per_s=requests_per_device, points=points)


def kernel_sensitivity(report: ProfileReport, costs: CostInputs, links: list[Link],
                       sides: dict[str, tuple[SideLatency, str | None]]) -> list[Sensitivity]:
    """For each projected side whose runtime figures are assumed: the best cut per link and the plan
    table with its per-kernel, host per-kernel and per-call overheads scaled by each factor."""
    out = []
    for kind, (side, runtime) in sides.items():
        if side.hardware is None or not side.node.runtime_assumed:
            continue
        name, overhead = side.hardware.runtime(runtime)
        rows = []
        for factor in SENSITIVITY_FACTORS:
            scaled = overhead.model_copy(update={"per_kernel_us": overhead.per_kernel_us * factor,
                                                 "host_per_kernel_us": overhead.host_per_kernel_us * factor,
                                                 "per_call_us": overhead.per_call_us * factor})
            hw = side.hardware.model_copy(update={"runtimes": {**side.hardware.runtimes, name: scaled}})
            cost = _projected_cost(report, hw, name)[0]
            varied = dataclasses.replace(costs, **{kind: cost})
            rows.append(SensitivityRow(factor=factor, best_cut={link.name: candidates(varied, link)[0].cut for link in links},
                                       plan_table=plan_table(varied, links[0].rtt_ms)))
        out.append(Sensitivity(side=kind, runtime=name, rows=rows))
    return out
