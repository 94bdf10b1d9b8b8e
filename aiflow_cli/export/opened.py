"""An export as its users open it: the manifest checked against the files once, each pair's codecs
built from its manifest entry, and the name the server serves it under.

The device, the server and the studies all start here, so none of them rebuilds a codec from a
``CodecSpec`` or re-checks the files on its own, and device code never imports the server to learn
a model's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from aiflow_cli.codecs.base import ActivationCodec
from aiflow_cli.codecs.registry import codec_of, crossing_codecs
from aiflow_cli.export.check import check_declarations, check_files
from aiflow_cli.export.triton import triton_model_name
from aiflow_cli.schemas.manifest import ExportedPair, Manifest, load_manifest

__all__ = ["OpenedExport", "OpenedPair", "open_export", "codec_of", "crossing_codecs", "served_name"]


def served_name(manifest: Manifest, pair: ExportedPair) -> str:
    """The v2 model that serves the pair's server half (the same name on every engine)."""
    return triton_model_name(manifest.source_model.name, pair.cut)


@dataclass
class OpenedPair:
    pair: ExportedPair
    name: str  # the v2 model serving its server half

    @cached_property
    def codecs(self) -> list[ActivationCodec]:  # built on first use: a learned codec's tables are not free
        return crossing_codecs(self.pair)


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
