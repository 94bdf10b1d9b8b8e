"""The one call behind ``aiflow profile``: load, measure, optionally project."""

from __future__ import annotations

from pathlib import Path

from aiflow_cli.models import load_model
from aiflow_cli.profiling.measure import Progress, check_profile_settings, profile_model
from aiflow_cli.profiling.roofline import measure_host_roofline, project
from aiflow_cli.schemas.hardware import ComputeProfile, load_compute
from aiflow_cli.schemas.profile import ProfileReport

__all__ = ["check_profile_settings", "run_profile"]


def run_profile(spec: str, batch: int = 1, seq_len: int | None = None, runtime: str = "torch",
                repeats: int = 20, warmup: int = 3, target: Path | None = None,
                trust_remote_code: bool = False, progress: Progress | None = None,
                threads: int | None = None) -> ProfileReport:
    check_profile_settings(batch, seq_len, repeats, warmup, runtime, threads)
    hw: ComputeProfile | None = load_compute(target) if target is not None else None
    model = load_model(spec, trust_remote_code=trust_remote_code)
    report = profile_model(model, batch=batch, seq_len=seq_len, runtime=runtime, repeats=repeats,
                           warmup=warmup, progress=progress, threads=threads)
    if hw is not None:
        report.projection = project(report, hw, measure_host_roofline())
    return report
