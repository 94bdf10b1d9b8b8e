"""The one call behind ``aiflow profile``: load, measure, optionally project."""

from __future__ import annotations

from pathlib import Path

from aiflow_cli.errors import InputError
from aiflow_cli.models import load_model
from aiflow_cli.profiling.cuda import require_cuda
from aiflow_cli.profiling.measure import Progress, check_profile_settings, profile_model
from aiflow_cli.profiling.roofline import measure_host_roofline, project
from aiflow_cli.schemas.hardware import ComputeProfile, load_compute
from aiflow_cli.schemas.profile import ProfileReport

__all__ = ["check_profile_settings", "run_profile"]


def run_profile(spec: str, batch: int = 1, seq_len: int | None = None, runtime: str = "torch",
                repeats: int = 20, warmup: int = 3, target: Path | None = None,
                trust_remote_code: bool = False, progress: Progress | None = None,
                threads: int | None = None, on: str = "cpu", target_runtime: str | None = None,
                target_batch: int | None = None) -> ProfileReport:
    """Measure ``spec`` here (on the CPU, or ``on="cuda"``); with ``target``, project it onto that
    hardware under ``target_runtime`` (default: the profile's) at ``target_batch`` (default: ``batch``)."""
    check_profile_settings(batch, seq_len, repeats, warmup, runtime, threads, on)
    if target_batch is not None and target_batch < 1:
        raise InputError(f"--target-batch must be at least 1, got {target_batch}")
    if target is None and (target_runtime or target_batch):
        raise InputError("--target-runtime and --target-batch need --target FILE.yaml")
    hw: ComputeProfile | None = load_compute(target) if target is not None else None
    if hw is not None:
        hw.runtime(target_runtime)  # an undeclared runtime fails before anything is measured
    if on == "cuda":
        require_cuda()
    model = load_model(spec, trust_remote_code=trust_remote_code)
    report = profile_model(model, batch=batch, seq_len=seq_len, runtime=runtime, repeats=repeats,
                           warmup=warmup, progress=progress, threads=threads, on=on)
    if hw is not None:
        host = measure_host_roofline(runtime=report.settings.runtime)
        report.projection = project(report, hw, host, runtime=target_runtime, batch=target_batch)
    return report
