"""How a server is configured and started: the one settings object of ``aiflow serve-pair server``,
and a child process running it through the library (``python -m aiflow_cli.serve.server``), for the
studies and the tests. Device code and studies import this module, never the server package."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field, field_validator

from aiflow_cli.errors import InputError
from aiflow_cli.serve.protocol import MAX_BATCH, MAX_BODY_BYTES
from aiflow_cli.settings import Settings, split_list

__all__ = ["ServeSettings", "ServerProcess", "pin_to_cores", "parse_cores", "free_port"]


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
    max_batch: int = Field(MAX_BATCH, ge=1, le=4096, description="Inputs one request may carry (a larger declared batch "
                                                          "is refused with a 400 before it is decoded); also written "
                                                          "into the Triton configuration.")
    max_sessions: int = Field(64, ge=1, le=100_000, description="Causal-LM sessions held at once.")
    idle_seconds: float = Field(300.0, gt=0, le=7 * 86400, description="Evict a session idle this long.")

    @field_validator("cores", mode="before")
    @classmethod
    def _cores(cls, value: object) -> object:
        return parse_cores(value)


def parse_cores(value: object) -> list[int] | None:
    """``--cores 0,1`` (or a list) as core numbers; None or empty: no pinning."""
    try:
        cores = [int(c) for c in split_list(value)] if value else []
    except (TypeError, ValueError):
        raise InputError(f"--cores: cannot read '{value}'", "for example --cores 1 or --cores 0,1") from None
    count = os.cpu_count() or 1
    if any(not 0 <= c < count for c in cores):
        raise InputError(f"--cores {value}: this machine has cores 0 to {count - 1}", "for example --cores 1")
    return cores or None


def pin_to_cores(cores: list[int] | None) -> None:
    """Keep this process (and the threads it starts) on ``cores``, so device and server do not contend."""
    if cores:
        try:
            os.sched_setaffinity(0, set(cores))
        except (AttributeError, OSError) as exc:
            raise InputError(f"cannot pin to cores {cores}: {exc}", "pass cores this machine has, or none") from None


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server in a child process (``python -m aiflow_cli.serve.server SETTINGS``), started and
    stopped by the studies and the tests. ``settings`` are further :class:`ServeSettings` fields
    (``max_body``, ``token_file``, ``idle_seconds``...), checked here before anything starts."""

    def __init__(self, directory: Path, port: int, engine: str = "embedded", cores: list[int] | None = None,
                 threads: int = 1, **settings: Any) -> None:
        config = ServeSettings(directory=Path(directory), port=port, engine=engine, cores=cores, threads=threads,
                               **settings)
        cmd = [sys.executable, "-m", "aiflow_cli.serve.server", config.model_dump_json()]
        self.url = f"127.0.0.1:{port}"
        self.headers = None
        if config.token_file is not None:
            from aiflow_cli.serve.binding import read_token

            self.headers = {"Authorization": f"Bearer {read_token(config.token_file)}"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        import tritonclient.http as httpclient

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() if self.proc.stderr else "").strip().splitlines()
                raise InputError(f"the server exited before it was ready: {(err or ['no output'])[-1]}")
            try:
                client = httpclient.InferenceServerClient(self.url, connection_timeout=1, network_timeout=1)
                if client.is_server_ready(headers=self.headers):
                    return
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            time.sleep(0.2)
        self.stop()
        raise InputError(f"the server did not answer within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


