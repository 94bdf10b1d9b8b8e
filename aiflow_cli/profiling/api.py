"""The one call behind ``aiflow profile``: load, measure, optionally project."""

from __future__ import annotations

from pathlib import Path

from aiflow_cli.errors import InputError
from aiflow_cli.models import load_model
from aiflow_cli.profiling.measure import Progress, profile_model
from aiflow_cli.profiling.roofline import measure_host_roofline, project
from aiflow_cli.schemas.hardware import ComputeProfile, load_compute
from aiflow_cli.schemas.profile import ProfileReport

__all__ = ["check_profile_settings", "run_profile"]


def check_profile_settings(batch: int, seq_len: int | None, repeats: int, warmup: int, runtime: str,
                           threads: int | None = None) -> None:
    """Reject bad values before anything slow happens."""
    if batch < 1:
        raise InputError(f"--batch must be at least 1, got {batch}")
    if seq_len is not None and seq_len < 1:
        raise InputError(f"--seq-len must be at least 1, got {seq_len}")
    if repeats < 1:
        raise InputError(f"--repeats must be at least 1, got {repeats}")
    if warmup < 0:
        raise InputError(f"--warmup must be 0 or more, got {warmup}")
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}")
    if runtime not in ("torch", "onnxruntime"):
        raise InputError(f"--runtime must be 'torch' or 'onnxruntime', got '{runtime}'")


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
