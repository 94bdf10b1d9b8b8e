"""``profile()``: measure a model segment by segment here, optionally project it onto hardware."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from pydantic import Field, model_validator

from aiflow_cli.errors import InputError
from aiflow_cli.schemas.profile import ProfileReport
from aiflow_cli.settings import Settings

__all__ = ["ProfileSettings", "profile"]

Progress = Callable[[str, int, int], None]


class ProfileSettings(Settings):
    model: str = Field(description="The model to measure (zoo:..., hf:..., FILE.onnx, py:module:function).")
    batch: int = Field(1, description="Batch size of the example input.")
    seq_len: Optional[int] = Field(None, description="Tokens per sequence for text models (default: 128 encoders, "
                                                     "64 causal LMs).")
    runtime: str = Field("torch", description="Runtime measured here: torch (eager), onnxruntime (each segment "
                                              "exported), or cuda-graph (each segment captured and replayed; --on cuda).")
    on: str = Field("cpu", description="cpu, or cuda: time the segments on this machine's NVIDIA GPU (TF32 allowed, "
                                       "cuDNN autotuned); the output loads as a --server/--device profile in aiflow split.")
    repeats: int = Field(20, description="Timed runs after warm-up; medians and p90 over these.")
    warmup: int = Field(3, description="Untimed runs first.")
    threads: Optional[int] = Field(None, description="Intra-op threads for torch and onnxruntime (default: all cores). "
                                                     "1 is the most repeatable.")
    target: Optional[Path] = Field(None, description="Hardware YAML (profiles/devices, profiles/servers): add a "
                                                     "projected latency per segment.")
    target_runtime: Optional[str] = Field(None, description="With --target: the runtime to project for (eager, "
                                                            "cuda-graph, onnxruntime-cuda, tensorrt, cpu; must be declared "
                                                            "in the YAML; default: its default_runtime).")
    target_batch: Optional[int] = Field(None, description="With --target: project at this batch size (default: "
                                                          "--batch).")
    trust_remote_code: bool = Field(False, description="Allow hf: models to run code from their repository.")

    @model_validator(mode="after")
    def _check(self) -> "ProfileSettings":
        from aiflow_cli.profiling.measure import check_profile_settings

        check_profile_settings(self.batch, self.seq_len, self.repeats, self.warmup, self.runtime, self.threads, self.on)
        if self.target_batch is not None and self.target_batch < 1:
            raise InputError(f"--target-batch must be at least 1, got {self.target_batch}")
        if self.target is None and (self.target_runtime or self.target_batch):
            raise InputError("--target-runtime and --target-batch need --target FILE.yaml")
        return self


def profile(settings: ProfileSettings, progress: Progress | None = None) -> ProfileReport:
    """Measure ``settings.model`` here (on the CPU, or ``on="cuda"``); with a target, project it onto
    that hardware under its runtime (default: the profile's) at its batch (default: ``batch``)."""
    from aiflow_cli.models import load_model
    from aiflow_cli.profiling.cuda import require_cuda
    from aiflow_cli.profiling.measure import profile_model
    from aiflow_cli.profiling.roofline import measure_host_roofline, project
    from aiflow_cli.schemas.hardware import load_compute

    s = settings
    hw = load_compute(s.target) if s.target is not None else None
    if hw is not None:
        hw.runtime(s.target_runtime)  # an undeclared runtime fails before anything is measured
    if s.on == "cuda":
        require_cuda()
    model = load_model(s.model, trust_remote_code=s.trust_remote_code)
    report = profile_model(model, batch=s.batch, seq_len=s.seq_len, runtime=s.runtime, repeats=s.repeats,
                           warmup=s.warmup, progress=progress, threads=s.threads, on=s.on)
    if hw is not None:
        host = measure_host_roofline(runtime=report.settings.runtime)
        report.projection = project(report, hw, host, runtime=s.target_runtime, batch=s.target_batch)
    return report
