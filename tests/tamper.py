"""Tampering helpers: change what an exported ONNX file computes and update the manifest to match,
so that only the behavioural check of ``split verify`` can catch it."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
from onnx import helper


def negate_output(path: Path, output: str) -> None:
    """Make the graph return -output instead of output (same name, dtype and shape)."""
    model = onnx.load(str(path))
    for node in model.graph.node:
        node.output[:] = [f"{output}__raw" if o == output else o for o in node.output]
    model.graph.node.append(helper.make_node("Neg", [f"{output}__raw"], [output]))
    onnx.save(model, str(path))


def rehash(export: Path) -> None:
    """Write the files' real sizes and sha256 back into manifest.json."""
    from aiflow_cli.hashing import sha256_file

    manifest_path = export / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for pair in manifest["pairs"]:
        for side in ("device", "server"):
            art = pair[side]
            art["sha256"] = sha256_file(export / art["file"])
            art["size_bytes"] = (export / art["file"]).stat().st_size
    manifest_path.write_text(json.dumps(manifest, indent=1))
