"""``--engine triton``: the same server halves on a real Triton Inference Server.

The ``nvidia-pytriton`` wheel on PyPI ships a Triton 2.51 server binary with its Python backend
(and no ONNX Runtime backend). aiflow fetches that wheel (pinned by sha256), unpacks the server
once into its cache, never installs the wheel (it would pin numpy below 2), and starts it on a
runtime copy of the export's Triton repository in which the network step runs ``server.onnx``
with onnxruntime inside the Python backend. The model names, inputs and outputs are the
exported ensemble's, so a device client cannot tell the engines apart.

Trap handled here: the backend stub links ``libpython3.X.so``; with an interpreter that is not
the system's (pyenv), the stub must load that interpreter's libpython, so its lib folder leads
``LD_LIBRARY_PATH``. Triton checks no bearer token: this engine binds loopback only.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

from aiflow_cli.errors import InputError
from aiflow_cli.models.cache import cache_dir
from aiflow_cli.models.wheels import fetch_wheel
from aiflow_cli.serve.binding import is_loopback
from aiflow_cli.serve.protocol import MAX_BATCH

__all__ = ["PYTRITON", "triton_home", "runtime_repository", "triton_command", "serve_triton"]

PYTRITON = "nvidia-pytriton==0.7.0"
PYTRITON_FILE = "nvidia_pytriton-0.7.0-py3-none-manylinux_2_35_x86_64.whl"
PYTRITON_SHA256 = "21f063ff93bb426d0c06b7a55e7eb9efcfe62c0dddd9a908e9877e18710128df"  # PyPI
_KEEP = ("pytriton/tritonserver/", "nvidia_pytriton.libs/")


def triton_home() -> Path:
    """The unpacked server (binary, Python backend, stubs, libraries), built once in the cache."""
    home = cache_dir("tritonserver-2.51-pytriton-0.7.0")
    server = home / "pytriton" / "tritonserver" / "bin" / "tritonserver"
    if not server.is_file():
        wheel = fetch_wheel(PYTRITON, PYTRITON_FILE, PYTRITON_SHA256)
        tmp = Path(tempfile.mkdtemp(dir=home.parent, prefix=".triton-"))
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                if info.filename.startswith(_KEEP):
                    zf.extract(info, tmp)
        for path in tmp.rglob("*"):
            if path.is_file() and ("/bin/" in str(path) or path.name == "triton_python_backend_stub"):
                path.chmod(0o755)
        shutil.rmtree(home)
        tmp.replace(home)
    stub = home / "pytriton" / "tritonserver" / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}" \
        / "triton_python_backend_stub"
    if not stub.is_file():
        raise InputError(f"the Triton Python backend has no stub for Python {sys.version_info[0]}.{sys.version_info[1]}",
                         "use Python 3.8-3.13, or --engine embedded")
    target = home / "pytriton" / "tritonserver" / "backends" / "python" / "triton_python_backend_stub"
    if not target.is_file():
        shutil.copyfile(stub, target)
        target.chmod(0o755)
    return home


def runtime_repository(directory: Path, into: Path, max_batch: int = MAX_BATCH) -> tuple[Path, list[str]]:
    """A repository for this Triton build (network step on the Python backend); returns it and the
    cuts it leaves out (causal-LM pairs: embedded engine only)."""
    from aiflow_cli.export.opened import open_export
    from aiflow_cli.export.triton import write_triton_pair

    directory = Path(directory).resolve()
    manifest = open_export(directory).manifest
    skipped = []
    for pair in manifest.pairs:
        if pair.kv_cache:
            skipped.append(pair.cut)
            continue
        write_triton_pair(into, manifest.source_model.name, pair, network_backend="python",
                          server_onnx=directory / pair.server.file, python_paths=python_paths(), max_batch=max_batch)
    if len(skipped) == len(manifest.pairs):
        raise InputError(f"{directory}: only causal-LM pairs, which Triton does not serve here",
                         "serve them with --engine embedded")
    return into / "triton", skipped


def triton_command(home: Path, repository: Path, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    server = home / "pytriton" / "tritonserver"
    cmd = [str(server / "bin" / "tritonserver"), f"--model-repository={repository}",
           f"--backend-directory={server / 'backends'}", f"--http-address={host}", f"--http-port={port}",
           "--allow-grpc=false", "--allow-metrics=false", "--allow-gpu-metrics=false", "--log-verbose=0",
           "--exit-on-error=true", "--strict-readiness=true"]
    env = dict(os.environ)
    libdirs = [sysconfig.get_config_var("LIBDIR") or "", str(home / "nvidia_pytriton.libs")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([d for d in libdirs if d] + [env.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
    return cmd, env


def python_paths() -> list[str]:
    """Where this interpreter finds aiflow and its dependencies (the venv, the source tree)."""
    import aiflow_cli

    paths = [str(Path(aiflow_cli.__file__).parents[1]), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    return list(dict.fromkeys(paths))


def serve_triton(settings, token: str | None) -> None:  # noqa: ANN001 - ServeSettings
    """Run tritonserver in the foreground until it exits or this process is stopped."""
    if token is not None or not is_loopback(settings.host):
        raise InputError("--engine triton serves loopback only (Triton checks no bearer token)",
                         "bind 127.0.0.1, or use --engine embedded with --token-file")
    home = triton_home()
    with tempfile.TemporaryDirectory(prefix="aiflow-triton-") as tmp:
        repository, skipped = runtime_repository(settings.directory, Path(tmp), settings.max_batch)
        if skipped:
            print(f"triton: left out causal-LM pairs at {', '.join(skipped)} (embedded engine only)", file=sys.stderr)
        cmd, env = triton_command(home, repository, settings.host, settings.port)
        proc = subprocess.Popen(cmd, env=env)

        def stop(_signum: int, _frame: object) -> None:
            proc.terminate()

        previous = signal.signal(signal.SIGTERM, stop)
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            code = proc.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)
        if code not in (0, -signal.SIGTERM, 143):
            raise InputError(f"tritonserver exited with code {code}", "run with --debug, or try --engine embedded")
