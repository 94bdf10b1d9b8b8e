"""Start a v2 server for an export: the embedded engine (Starlette + uvicorn, onnxruntime inside)
or Triton (see :mod:`aiflow_cli.serve.triton_engine`). Binding rules: :mod:`aiflow_cli.serve.binding`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, field_validator

from aiflow_cli.errors import InputError
from aiflow_cli.serve.binding import check_bind
from aiflow_cli.serve.protocol import MAX_BODY_BYTES
from aiflow_cli.settings import Settings, split_list

__all__ = ["ServeSettings", "serve", "pin_to_cores", "parse_cores"]



class ServeSettings(Settings):
    directory: Path = Field(description="A folder written by aiflow split --export.")
    host: str = Field("127.0.0.1", description="Address to bind. Loopback by default; others need --token-file.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port.")
    token_file: Optional[Path] = Field(None, description="A file holding one secret line: the server requires it as "
                                                         "a bearer token (needed to bind anything but loopback); the "
                                                         "device sends it.")
    engine: Literal["embedded", "triton"] = Field("embedded", description="embedded (uvicorn + onnxruntime) or triton "
                                                                          "(Triton Inference Server from the "
                                                                          "nvidia-pytriton wheel).")
    threads: Optional[int] = Field(None, ge=1, le=1024, description="onnxruntime intra-op threads per model.")
    cores: Optional[list[int]] = Field(None, description="Pin the server to these cores, e.g. 1 or 0,1.")
    max_body: int = Field(MAX_BODY_BYTES, ge=1024, le=2**31, description="Largest request body in bytes (413 above).")
    max_sessions: int = Field(64, ge=1, le=100_000, description="Causal-LM sessions held at once.")
    idle_seconds: float = Field(300.0, gt=0, le=7 * 86400, description="Evict a session idle this long.")

    @field_validator("cores", mode="before")
    @classmethod
    def _cores(cls, value: object) -> object:
        return parse_cores(value)


def parse_cores(value: object) -> list[int] | None:
    """``--cores 0,1`` (or a list) as core numbers; None or empty: no pinning."""
    try:
        return [int(c) for c in split_list(value)] or None if value else None
    except (TypeError, ValueError):
        raise InputError(f"--cores: cannot read '{value}'", "for example --cores 1 or --cores 0,1") from None


def pin_to_cores(cores: list[int] | None) -> None:
    """Keep this process (and the threads it starts) on ``cores``, so device and server do not contend."""
    if cores:
        try:
            os.sched_setaffinity(0, set(cores))
        except (AttributeError, OSError) as exc:
            raise InputError(f"cannot pin to cores {cores}: {exc}", "pass cores this machine has, or none") from None


def serve(settings: ServeSettings) -> None:
    """Check everything, then serve until interrupted."""
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
    app = build_app(models, token, settings.max_body)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
