"""Hardware profiles: compute nodes (devices, servers) and links, read from YAML in ``profiles/``.

A compute profile gives the roofline of one machine (peak MAC/s, memory bandwidth); a link
profile gives rate, round-trip time and jitter. Numbers in the shipped files name their public
source in a comment, and everything projected from them is labelled ``projected``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aiflow_cli.errors import ConfigError
from aiflow_cli.schemas.loading import check_schema_version, read_mapping, validate_file

__all__ = ["RUNTIMES", "RuntimeName", "RuntimeOverhead", "ComputeProfile", "LinkProfile", "HardwareProfile", "load_hardware", "load_compute", "load_link"]


RuntimeName = Literal["eager", "cuda-graph", "onnxruntime-cuda", "tensorrt", "cpu"]
RUNTIMES: tuple[str, ...] = ("eager", "cuda-graph", "onnxruntime-cuda", "tensorrt", "cpu")


class RuntimeOverhead(BaseModel):
    """What one runtime costs beyond the roofline on this machine, kernel by kernel.

    A segment's projected time is ``max(host, device) `` with ``device = roofline / efficiency +
    kernels x per_kernel_us`` and ``host = kernels x host_per_kernel_us`` (the host launches
    asynchronously, so its work overlaps the device's), plus ``per_call_us`` once per call.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    per_kernel_us: float = Field(ge=0, description="device-side cost per kernel: launch latency and the floor of a tiny kernel")
    host_per_kernel_us: float = Field(default=0.0, ge=0, description="host-side dispatch per kernel (framework + driver)")
    per_call_us: float = Field(default=0.0, ge=0, description="once per call: graph launch or session run, copies, sync")
    fuses: list[Literal["normalization", "pointwise"]] = Field(
        default_factory=list, description="op classes this runtime fuses into the kernel before them")
    source: str = Field(description="where the figures come from (a measurement, a publication), or why assumed")
    assumed: bool = Field(description="true when no measurement or publication stands behind the figures")


class ComputeProfile(BaseModel):
    """One machine that runs model segments (a device or a server)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    kind: Literal["device", "server"]
    name: str
    peak_macs_per_s: float = Field(gt=0, description="dense multiply-accumulates per second (fp32 unless dtype says)")
    memory_bandwidth_bytes_per_s: float = Field(gt=0)
    dtype: str = "fp32"
    memory_bytes: float | None = Field(default=None, gt=0)
    efficiency: float | None = Field(
        default=None, gt=0, le=1,
        description="fraction of the roofline reached; if absent, calibrated from this machine's measurement",
    )
    source: str = Field(description="public source of the figures")
    runtimes: dict[RuntimeName, RuntimeOverhead] = Field(
        default_factory=dict, description="per-kernel overheads by runtime; without them a projection is roofline only")
    default_runtime: RuntimeName | None = Field(default=None, description="the runtime projected unless one is named")

    @model_validator(mode="after")
    def _default_is_declared(self) -> "ComputeProfile":
        if self.default_runtime is not None and self.default_runtime not in self.runtimes:
            raise ValueError(f"default_runtime '{self.default_runtime}' is not one of the declared runtimes "
                             f"({', '.join(self.runtimes) or 'none'})")
        if self.runtimes and self.default_runtime is None:
            raise ValueError("runtimes are declared but default_runtime is missing")
        return self

    def runtime(self, name: str | None) -> tuple[str, RuntimeOverhead | None]:
        """The runtime to project (``name`` or the default) and its overheads; None: roofline only."""
        if name is None:
            return (self.default_runtime, self.runtimes[self.default_runtime]) if self.default_runtime else ("roofline", None)
        if name not in self.runtimes:
            raise ConfigError(f"runtime '{name}' is not declared for {self.name}",
                              f"choose one of: {', '.join(self.runtimes) or 'none (add runtimes: to the YAML)'}")
        return name, self.runtimes[name]


class LinkProfile(BaseModel):
    """A network link between device and server."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    kind: Literal["link"]
    name: str
    rate_bytes_per_s: float = Field(gt=0)
    uplink_rate_bytes_per_s: float | None = Field(default=None, gt=0)
    rtt_ms: float = Field(ge=0)
    jitter_ms: float = Field(default=0.0, ge=0)
    source: str

    @property
    def up_rate(self) -> float:
        return self.uplink_rate_bytes_per_s or self.rate_bytes_per_s


HardwareProfile = Union[ComputeProfile, LinkProfile]
_BY_KIND: dict[str, type[BaseModel]] = {"device": ComputeProfile, "server": ComputeProfile, "link": LinkProfile}


HARDWARE_SCHEMA_VERSION = "aiflow.hardware/1"


def load_hardware(path: Path) -> HardwareProfile:
    path = Path(path)
    data = read_mapping(path)
    check_schema_version(path, data, HARDWARE_SCHEMA_VERSION, required=False, hint="see profiles/README.md")
    data = {k: v for k, v in data.items() if k != "schema_version"}
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in _BY_KIND:
        raise ConfigError(f"{path}: field 'kind' must be device, server or link, got {str(kind)[:40]!r}",
                          "see profiles/README.md for the format")
    return validate_file(path, _BY_KIND[kind], data)


def load_compute(path: Path) -> ComputeProfile:
    prof = load_hardware(path)
    if not isinstance(prof, ComputeProfile):
        raise ConfigError(f"{path}: is a link profile, expected a device or server", "pass a file from profiles/devices or profiles/servers")
    return prof


def load_link(path: Path) -> LinkProfile:
    prof = load_hardware(path)
    if not isinstance(prof, LinkProfile):
        raise ConfigError(f"{path}: is a {prof.kind} profile, expected a link", "pass a file from profiles/links")
    return prof
