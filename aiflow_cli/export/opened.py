"""An export as its users open it: the manifest checked against the files once, and each pair with
the name the server serves it under.

The device, the server and the studies all start here, so none of them re-checks the files on its
own, and device code never imports the server to learn a model's name. A pair's codecs come from
:func:`aiflow_cli.codecs.registry.crossing_codecs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aiflow_cli.export.check import check_declarations, check_files
from aiflow_cli.export.triton import triton_model_name
from aiflow_cli.schemas.manifest import ExportedPair, Manifest, load_manifest

__all__ = ["OpenedExport", "OpenedPair", "open_export", "served_name"]


def served_name(manifest: Manifest, pair: ExportedPair) -> str:
    """The v2 model that serves the pair's server half (the same name on every engine)."""
    return triton_model_name(manifest.source_model.name, pair.cut)


@dataclass
class OpenedPair:
    pair: ExportedPair
    name: str  # the v2 model serving its server half


@dataclass
class OpenedExport:
    directory: Path
    manifest: Manifest
    pairs: list[OpenedPair] = field(default_factory=list)


def open_export(directory: Path) -> OpenedExport:
    """Load ``directory``'s manifest and check every file's size, hash and declared tensors against it
    (one error naming each mismatch; nothing is served or sent from an export that fails)."""
    directory = Path(directory)
    manifest = load_manifest(directory)
    check_declarations(directory, manifest, check_files(directory, manifest))
    return OpenedExport(directory, manifest, [OpenedPair(p, served_name(manifest, p)) for p in manifest.pairs])
