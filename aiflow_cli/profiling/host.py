"""What machine a measurement was taken on: CPU, cores, threads, library versions."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

import torch

from aiflow_cli.schemas.profile import HostInfo

__all__ = ["host_info", "cpu_model"]

_LIBRARIES = ("torch", "onnxruntime", "onnx", "transformers", "numpy", "aiflow-cli")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_info(accelerator: str | None = None) -> HostInfo:
    """This machine; ``accelerator`` names the GPU when the timings were taken on one."""
    versions = {}
    for lib in _LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    if accelerator and torch.version.cuda:
        versions["cuda"] = torch.version.cuda
        versions["cudnn"] = str(torch.backends.cudnn.version())
    return HostInfo(cpu=cpu_model(), cores=os.cpu_count() or 1, threads=torch.get_num_threads(),
                    platform=platform.platform(), python=sys.version.split()[0], libraries=versions,
                    accelerator=accelerator)
