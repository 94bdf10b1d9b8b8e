"""Export one cut of a segmented model as a matched pair: device.onnx and server.onnx.

::

    device.onnx:  input --segments[0..c]--> codec.device_module --> wire tensor(s)
    server.onnx:  wire tensor(s) --codec.server_module--> segments[c+1..] --> output

The codec applies to the first crossing tensor (the activation); the others (an attention
mask) cross as they are.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from aiflow_cli.codecs.base import ActivationCodec
from aiflow_cli.errors import InputError
from aiflow_cli.export.tensors import boundary_names, declare, dynamic_axes
from aiflow_cli.hashing import sha256_file
from aiflow_cli.models.optimum_export import tensor_decl
from aiflow_cli.models.segmented import SegmentedModel
from aiflow_cli.onnx_io import OPSET, Exporter, export_onnx, exporter_of
from aiflow_cli.schemas.manifest import Artifact, TensorDecl

__all__ = ["exit_output_name", "DeviceHalf", "ServerHalf", "ExportedFiles", "export_pair", "pair_dirname", "save_artifact",
           "artifact_of"]


def _on_first(value: Any, fn: nn.Module) -> Any:
    if isinstance(value, tuple):
        return (fn(value[0]), *value[1:])
    return fn(value)


class DeviceHalf(nn.Module):
    """Segments up to the cut, then the codec's encoder; exit heads (segment index -> head) add
    their logits as extra outputs after the wire tensor."""

    def __init__(self, segments: list[nn.Module], encoder: nn.Module, exits: dict[int, nn.Module] | None = None) -> None:
        super().__init__()
        self.segments, self.encoder = nn.ModuleList(segments), encoder
        self.exit_at = sorted(exits or {})
        self.exits = nn.ModuleList([exits[i] for i in self.exit_at]) if exits else nn.ModuleList()

    def forward(self, x: Any) -> Any:
        taps = []
        for i, seg in enumerate(self.segments):
            x = seg(x)
            if i in self.exit_at:
                taps.append(self.exits[self.exit_at.index(i)](x))
        wire = _on_first(x, self.encoder)
        return (wire, *taps) if taps else wire


class ServerHalf(nn.Module):
    def __init__(self, decoder: nn.Module, segments: list[nn.Module]) -> None:
        super().__init__()
        self.decoder, self.segments = decoder, nn.ModuleList(segments)

    def forward(self, x: Any) -> Any:
        x = _on_first(x, self.decoder)
        for seg in self.segments:
            x = seg(x)
        return x


def pair_dirname(cut: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", cut).strip("_") or "cut"


class ExportedFiles:
    def __init__(self, device: Artifact, server: Artifact, crossing: list[TensorDecl]) -> None:
        self.device, self.server, self.crossing = device, server, crossing


def save_artifact(root: Path, rel: str, proto: onnx.ModelProto, inputs: list[TensorDecl],
              outputs: list[TensorDecl]) -> Artifact:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return Artifact(file=rel, sha256=sha256_file(path), size_bytes=path.stat().st_size, inputs=inputs,
                    outputs=outputs, exporter=exporter_of(proto))


def artifact_of(root: Path, rel: str, inputs: list[TensorDecl], outputs: list[TensorDecl]) -> Artifact:
    """The manifest entry of a graph written by something else (a quantiser): its hash, size,
    declarations and exporter, read from the file's graph without its external weights."""
    path = root / rel
    exporter = exporter_of(onnx.load(str(path), load_external_data=False))
    return Artifact(file=rel, sha256=sha256_file(path), size_bytes=path.stat().st_size, inputs=inputs,
                    outputs=outputs, exporter=exporter)


def _onnx_decls(proto: onnx.ModelProto, names: list[str]) -> list[TensorDecl]:
    infos = {v.name: v for v in list(proto.graph.input) + list(proto.graph.output) + list(proto.graph.value_info)}
    return [tensor_decl(infos[name]) for name in names]


def _export_onnx_source(model: SegmentedModel, cut_index: int, codec: ActivationCodec, root: Path) -> ExportedFiles:
    """ONNX sources are split on the graph itself (no torch re-export); fp32 only."""
    from aiflow_cli.errors import InputError

    if codec.full_name != "fp32":
        raise InputError(f"codec '{codec.full_name}' is not available for ONNX-file sources", "use --codec fp32")
    extractor = model.extras["onnx_extractor"]
    inputs, outputs = model.extras["onnx_inputs"], model.extras["onnx_outputs"]
    crossing = list(model.segments[cut_index + 1].module.input_names)
    dev_proto = extractor.extract_model(inputs, crossing)
    srv_proto = extractor.extract_model(crossing, outputs)
    sub = pair_dirname(model.cuts[cut_index])
    wire = _onnx_decls(extractor.model, crossing)
    return ExportedFiles(
        device=save_artifact(root, f"{sub}/device.onnx", dev_proto, _onnx_decls(extractor.model, inputs), wire),
        server=save_artifact(root, f"{sub}/server.onnx", srv_proto, wire, _onnx_decls(extractor.model, outputs)),
        crossing=wire,
    )


@torch.no_grad()
def exit_output_name(cut: str) -> str:
    return f"exit_{cut}_logits"


def export_pair(model: SegmentedModel, cut_index: int, codec: ActivationCodec, root: Path, example: Any,
                opset: int = OPSET, exits: dict[int, nn.Module] | None = None,
                exporter: Exporter = "dynamo") -> ExportedFiles:
    """Write ``root/<cut>/device.onnx`` and ``server.onnx``; return their declarations.

    ``exits`` (segment index <= cut_index -> head) become extra device outputs named
    ``exit_<cut>_logits``; only the wire tensor(s) cross to the server.
    """
    if "onnx_extractor" in model.extras:
        if exits:
            raise InputError("early exits are not available for ONNX-file sources", "export without --exit")
        return _export_onnx_source(model, cut_index, codec, root)
    modules = [s.module for s in model.segments]
    device = DeviceHalf(modules[: cut_index + 1], codec.device_module(), exits).eval()
    server = ServerHalf(codec.server_module(), modules[cut_index + 1:]).eval()
    device_out = device(example)
    wire = device_out[0] if exits else device_out
    output = server(wire)
    in_decls = declare(model, boundary_names(model, "input", example), example)
    wire_decls = declare(model, boundary_names(model, "crossing", wire), wire)
    out_decls = declare(model, boundary_names(model, "output", output), output)
    exit_decls = [TensorDecl(name=exit_output_name(model.cuts[i]), shape=["batch", int(t.shape[-1])], dtype="float32")
                  for i, t in zip(sorted(exits or {}), device_out[1:] if exits else [])]
    sub = pair_dirname(model.cuts[cut_index])
    dev_proto = export_onnx(device, example, [d.name for d in in_decls], [d.name for d in wire_decls + exit_decls],
                            dynamic_axes(in_decls + wire_decls + exit_decls), opset, exporter)
    srv_proto = export_onnx(server, wire, [d.name for d in wire_decls], [d.name for d in out_decls],
                            dynamic_axes(wire_decls + out_decls), opset, exporter)
    return ExportedFiles(
        device=save_artifact(root, f"{sub}/device.onnx", dev_proto, in_decls, wire_decls + exit_decls),
        server=save_artifact(root, f"{sub}/server.onnx", srv_proto, wire_decls, out_decls),
        crossing=wire_decls,
    )
