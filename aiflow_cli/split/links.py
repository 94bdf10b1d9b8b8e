"""Links from YAML files or from ``--bandwidth 0.5MB/s,1MB/s --rtt 20ms``."""

from __future__ import annotations

import math
import re
from pathlib import Path

from aiflow_cli.errors import InputError
from aiflow_cli.schemas.hardware import load_link
from aiflow_cli.split.cost import Link

__all__ = ["parse_rate", "parse_ms", "resolve_links"]

_RATE_UNITS = {"b/s": 1 / 8, "kb/s": 1e3, "mb/s": 1e6, "gb/s": 1e9, "bps": 1 / 8, "kbit/s": 1e3 / 8,
               "mbit/s": 1e6 / 8, "gbit/s": 1e9 / 8, "kbps": 1e3 / 8, "mbps": 1e6 / 8, "gbps": 1e9 / 8,
               "B/s": 1.0, "KB/s": 1e3, "MB/s": 1e6, "GB/s": 1e9}


def parse_rate(text: str) -> float:
    """'0.5MB/s' -> 500000.0 bytes/s. MB/s is bytes; Mbit/s and Mbps are bits."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([A-Za-z/]+)\s*", text)
    if not m:
        raise InputError(f"cannot read link rate '{text}'", "write e.g. 0.5MB/s, 2Mbit/s or 500KB/s")
    value, unit = float(m.group(1)), m.group(2)
    scale = _RATE_UNITS.get(unit) or _RATE_UNITS.get(unit.lower() if unit.lower().endswith(("bit/s", "bps")) else unit)
    if scale is None:
        raise InputError(f"unknown rate unit '{unit}' in '{text}'", "use B/s, KB/s, MB/s, GB/s, Kbit/s, Mbit/s or Gbit/s")
    if not math.isfinite(value * scale) or value <= 0:
        raise InputError(f"link rate must be a finite positive number, got '{text}'", "write e.g. 0.5MB/s")
    return value * scale


def parse_ms(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s)?\s*", text)
    if not m:
        raise InputError(f"cannot read time '{text}'", "write e.g. 20ms or 0.02s")
    value = float(m.group(1)) * (1000 if m.group(2) == "s" else 1)
    if not math.isfinite(value):
        raise InputError(f"cannot read time '{text}' as a finite number", "write e.g. 20ms or 0.02s")
    return value


def resolve_links(paths: list[Path], bandwidth: str | None, rtt: str | None) -> list[Link]:
    links = []
    for path in paths:
        prof = load_link(path)
        links.append(Link(prof.name, prof.up_rate, prof.rate_bytes_per_s, prof.rtt_ms))
    if bandwidth:
        rtt_ms = parse_ms(rtt) if rtt else 0.0
        for item in bandwidth.split(","):
            rate = parse_rate(item)
            links.append(Link(item.strip(), rate, rate, rtt_ms))
    elif rtt:
        raise InputError("--rtt needs --bandwidth", "add --bandwidth, or put rtt_ms in the link YAML")
    if not links:
        raise InputError("no link given", "pass --link FILE.yaml or --bandwidth 0.5MB/s,1MB/s --rtt 20ms")
    return links
