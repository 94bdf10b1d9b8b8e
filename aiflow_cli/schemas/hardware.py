"""Hardware profiles: compute nodes (devices, servers) and links, read from YAML in ``profiles/``.

A compute profile gives the roofline of one machine (peak MAC/s, memory bandwidth); a link
profile gives rate, round-trip time and jitter. Numbers in the shipped files name their public
source in a comment, and everything projected from them is labelled ``projected``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from aiflow_cli.errors import ConfigError
from aiflow_cli.schemas.loading import read_mapping, validate_file

__all__ = ["ComputeProfile", "LinkProfile", "HardwareProfile", "load_hardware", "load_compute", "load_link"]


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


def load_hardware(path: Path) -> HardwareProfile:
    path = Path(path)
    data = read_mapping(path)
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
