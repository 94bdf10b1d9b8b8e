"""Start a v2 server for an export: the embedded engine (Starlette + uvicorn, onnxruntime inside)
or Triton (see :mod:`aiflow_cli.serve.triton_engine`). Binding rules: :mod:`aiflow_cli.serve.binding`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from aiflow_cli.errors import InputError
from aiflow_cli.serve.binding import check_bind

__all__ = ["ServeSettings", "serve", "pin_to_cores"]



@dataclass
class ServeSettings:
    directory: Path
    host: str = "127.0.0.1"
    port: int = 8000
    token_file: Path | None = None
    engine: str = "embedded"
    threads: int | None = None
    max_body_bytes: int = 64 * 2**20
    max_sessions: int = 64
    idle_seconds: float = 300.0
    cores: list[int] | None = None


def pin_to_cores(cores: list[int] | None) -> None:
    """Keep this process (and the threads it starts) on ``cores``, so device and server do not contend."""
    if cores:
        try:
            os.sched_setaffinity(0, set(cores))
        except (AttributeError, OSError) as exc:
            raise InputError(f"cannot pin to cores {cores}: {exc}", "pass cores this machine has, or none") from None


def serve(settings: ServeSettings) -> None:
    """Check everything, then serve until interrupted."""
    if not 0 < settings.port < 65536:
        raise InputError(f"--port must be 1-65535, got {settings.port}")
    if settings.max_body_bytes < 1024:
        raise InputError("--max-body must be at least 1KB")
    token = check_bind(settings.host, settings.token_file)
    pin_to_cores(settings.cores)
    if settings.engine == "triton":
        from aiflow_cli.serve.triton_engine import serve_triton

        serve_triton(settings, token)
        return
    if settings.engine != "embedded":
        raise InputError(f"--engine must be embedded or triton, got '{settings.engine}'")
    import uvicorn

    from aiflow_cli.serve.app import build_app
    from aiflow_cli.serve.catalog import load_served_models

    models = load_served_models(settings.directory, settings.threads, settings.max_sessions, settings.idle_seconds)
    app = build_app(models, token, settings.max_body_bytes)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
