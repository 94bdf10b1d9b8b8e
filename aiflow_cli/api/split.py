"""``plan()``: rank every cut of a model for a device, a server and links; export the chosen pairs.

The option groups that ``plan`` shares with ``train_bottleneck`` (which hardware, which links, where
to export) are declared once here, as :class:`Targets` and :class:`ExportOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from pydantic import Field, field_validator, model_validator

from aiflow_cli.errors import InputError
from aiflow_cli.settings import Settings, split_list

if TYPE_CHECKING:
    from aiflow_cli.schemas.manifest import Manifest
    from aiflow_cli.split.cost import Link
    from aiflow_cli.split.planner import SplitResult

__all__ = ["Targets", "ExportOptions", "PlanSettings", "SplitOutcome", "plan"]

Progress = Callable[[str, int, int], None]


class Targets(Settings):
    """The device, the server and the links a plan predicts latency for."""

    device: Optional[Path] = Field(None, description="Device: profile JSON measured there (aiflow profile --out), "
                                                     "or hardware YAML (projected).")
    server: Optional[Path] = Field(None, description="Server: profile JSON or hardware YAML.")
    link: list[Path] = Field(default_factory=list, description="Link YAML (profiles/links); repeatable.")
    bandwidth: Optional[str] = Field(None, description="Comma-separated link rates instead of YAML, e.g. "
                                                       "0.5MB/s,1MB/s,2MB/s (or Mbit/s).")
    rtt: Optional[str] = Field(None, description="Round-trip time for --bandwidth links, e.g. 20ms.")
    profile: Optional[Path] = Field(None, description="This machine's profile of MODEL, used to project hardware "
                                                      "YAML (else measured now).")

    @model_validator(mode="after")
    def _device_and_server(self) -> "Targets":
        if (self.device is None) != (self.server is None):
            raise InputError("--device and --server go together", "pass both, or neither")
        return self

    @property
    def wants_links(self) -> bool:
        return bool(self.link or self.bandwidth or self.device)

    def links(self) -> "list[Link]":
        """The links named by --link and --bandwidth/--rtt (an error when none is)."""
        from aiflow_cli.split.links import resolve_links

        return resolve_links(self.link, self.bandwidth, self.rtt)


class ExportOptions(Settings):
    export: Optional[Path] = Field(None, description="Write device.onnx/server.onnx per cut, manifest.json and a "
                                                     "Triton repository here.")
    force: bool = Field(False, description="Replace a non-empty --export directory, and use profiles flagged unstable.")
    exporter: str = Field("dynamo", description="ONNX exporter for the pair: dynamo (torch.export; default) or "
                                                "torchscript (7-27x faster to export, docs/benchmarks.md). Where dynamo "
                                                "fails on a graph, TorchScript writes it, with a warning and a note in "
                                                "manifest.json.")

    @field_validator("exporter")
    @classmethod
    def _exporter(cls, value: str) -> str:
        from aiflow_cli.onnx_io import check_exporter

        return check_exporter(value)


class PlanSettings(Targets, ExportOptions):
    model: str = Field(description="A model (as for profile).")
    codec: str = Field("fp32", description="Activation codec at the cut: fp32, fp16, int8-tensor, int8-channel; "
                                           "append +zstd to compress.")
    device_runtime: Optional[str] = Field(None, description="Runtime projected on a hardware-YAML device: eager, "
                                                            "cuda-graph, onnxruntime-cuda, tensorrt or cpu, as the YAML "
                                                            "declares (default: its default_runtime).")
    server_runtime: Optional[str] = Field(None, description="Runtime projected on a hardware-YAML server (as "
                                                            "--device-runtime).")
    server_batch: Optional[list[int]] = Field(None, description="Comma-separated batch sizes, e.g. 1,8,32,128,512: "
                                                                "project the server half of each best cut (or --cut) at "
                                                                "each, and how many devices one server sustains.")
    requests_per_device: float = Field(30.0, description="With --server-batch: requests per second each device "
                                                         "sends (30: a 30 fps camera).")
    sensitivity: bool = Field(False, description="For each side whose per-kernel figures are assumed: the best cut "
                                                 "per link and the plan table with them x0.25 .. x4.")
    cut: list[str] = Field(default_factory=list, description="Cut to export (repeatable); default: each link's best.")
    triton: bool = Field(True, description="Also write triton/ for the server halves.")
    verify_count: int = Field(50, ge=1, description="Real inputs to verify each pair on (1 or more).")
    trust_remote_code: bool = Field(False, description="Allow hf: models to run code from their repository.")

    @field_validator("server_batch", mode="before")
    @classmethod
    def _batches(cls, value: object) -> object:
        try:
            return None if not value else [int(b) for b in split_list(value)]
        except ValueError:
            raise InputError(f"--server-batch: cannot read '{value}'", "for example --server-batch 1,8,32,128,512") from None

    @field_validator("codec")
    @classmethod
    def _codec(cls, value: str) -> str:
        from aiflow_cli.codecs import make_codec

        make_codec(value)
        return value

    @model_validator(mode="after")
    def _something_to_do(self) -> "PlanSettings":
        if self.device is not None and not (self.link or self.bandwidth):
            raise InputError("no link given", "pass --link FILE.yaml or --bandwidth 0.5MB/s,1MB/s --rtt 20ms")
        if self.device is None and (self.device_runtime or self.server_runtime or self.server_batch or self.sensitivity):
            raise InputError("--device-runtime, --server-runtime, --server-batch and --sensitivity need a plan",
                             "pass --device, --server and --link")
        if self.device is None and not (self.export and self.cut):
            raise InputError("nothing to do", "pass --device/--server/--link to plan, or --cut C --export DIR to export")
        return self


@dataclass
class SplitOutcome:
    result: "SplitResult | None"
    manifest: "Manifest | None"


def plan(settings: PlanSettings, progress: Progress | None = None) -> SplitOutcome:
    """Plan (with a device and a server) and export (with --export): the library call behind ``aiflow split``."""
    from aiflow_cli.models import load_model
    from aiflow_cli.split.cost import DEVICE_ONLY, SERVER_ONLY
    from aiflow_cli.staging import check_output_dir

    s = settings
    links = s.links() if s.wants_links else []
    if s.export is not None:
        check_output_dir(s.export, s.force)
    model = load_model(s.model, trust_remote_code=s.trust_remote_code)
    if model.task == "causal-lm" and s.codec != "fp32" and s.export is not None:
        raise InputError(f"codec '{s.codec}' is not available for KV-cached causal-LM pairs yet", "use --codec fp32")
    for cut in s.cut:
        model.cut_index(cut)

    result = None
    if s.device is not None:
        from aiflow_cli.profiling.measure import profile_model
        from aiflow_cli.split.planner import plan_split

        result = plan_split(model, s.device, s.server, links, s.codec, s.profile,
                            measure=lambda: profile_model(model, repeats=10, warmup=2, progress=progress),
                            accept_unstable=s.force, device_runtime=s.device_runtime,
                            server_runtime=s.server_runtime, server_batches=s.server_batch,
                            requests_per_device=s.requests_per_device, capacity_cuts=s.cut or None,
                            sensitivity=s.sensitivity)
    manifest = None
    if s.export is not None:
        chosen = list(s.cut)
        if not chosen and result is not None:
            chosen = [lp.best_cut for lp in result.plan.links if lp.best_cut not in (DEVICE_ONLY, SERVER_ONLY)]
            chosen = list(dict.fromkeys(chosen))
            if not chosen:
                raise InputError("the best plan for every link runs on one side only: nothing to split",
                                 "name a cut with --cut to export it anyway")
        if model.task == "causal-lm":
            from aiflow_cli.export.lm_pair import export_lm_split

            manifest = export_lm_split(model, chosen, s.export, force=s.force, progress=progress, exporter=s.exporter)
        else:
            manifest = _export(model, chosen, s, result, progress)
    return SplitOutcome(result=result, manifest=manifest)


def _export(model, chosen: list[str], s: PlanSettings, result, progress: Progress | None):  # noqa: ANN001, ANN202
    from aiflow_cli.export.api import export_split
    from aiflow_cli.schemas.manifest import PairCost
    from aiflow_cli.split.codec_eval import evaluate_codec

    if result is not None:
        by_cut = {c.cut: c for c in result.codecs}
    else:
        by_cut = {c.cut: c for c in evaluate_codec(model, s.codec, cut_indices=[model.cut_index(c) for c in chosen])}
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
                                  device_source=result.plan.device.source, server_source=result.plan.server.source,
                                  device_runtime=result.plan.device.runtime, server_runtime=result.plan.server.runtime)
    return export_split(model, chosen, {c: by_cut[c].codec for c in chosen}, s.export, force=s.force, triton=s.triton,
                        verify_count=s.verify_count, predicted=predicted, bytes_per_request=sent, costs=costs,
                        plan_table=[r.model_dump() for r in result.plan.plan_table] if result else None,
                        progress=progress, exporter=s.exporter)
