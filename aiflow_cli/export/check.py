"""``aiflow split verify DIR``: prove that an export is what its manifest says, then that it works.

In order, stopping at the first kind of failure (each one exit 2, naming the field):

1. the manifest: UTF-8 JSON, the shipped schema, finite numbers, at least one pair;
2. the files: every path relative and inside DIR (after resolving symlinks), present, of the
   declared size and sha256; each ONNX file parses;
3. the declarations: every declared input, output and crossing tensor against the ONNX graphs
   (names and order, dtypes, static dims, dynamic axis names); the crossing tensors are device
   outputs and server inputs alike;
4. the source model: loaded from its spec (a ``py:`` spec imports code, so only with
   ``trust_source``: nothing is imported otherwise), same weights (fingerprint), ``cut`` /
   ``cut_index`` among its cuts;
5. the behaviour: every pair re-run on real inputs against its reference.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from aiflow_cli.errors import ConfigError, InputError, VerificationError
from aiflow_cli.export.speculative import verify_speculative
from aiflow_cli.export.verify import verify_pair
from aiflow_cli.hashing import sha256_file
from aiflow_cli.models.reference_inputs import real_inputs
from aiflow_cli.models.segmented import SegmentedModel
from aiflow_cli.models.sources import load_model_named_in_file
from aiflow_cli.schemas.manifest import Artifact, Manifest, TensorDecl, load_manifest

__all__ = ["inside", "check_files", "check_declarations", "check_cuts", "verify_export_dir",
           "graph_decls"]

_ELEM = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.UINT8: "uint8",
         onnx.TensorProto.INT8: "int8", onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT64: "int64",
         onnx.TensorProto.BOOL: "bool", onnx.TensorProto.DOUBLE: "float64"}


def inside(directory: Path, rel: str, field: str) -> Path:
    """``directory / rel`` if ``rel`` is a relative path that stays inside ``directory`` once
    symlinks are resolved; else a :class:`ConfigError` naming ``field``."""
    where = f"{Path(directory) / 'manifest.json'}: field '{field}'"
    path = Path(rel)
    if not rel or path.is_absolute() or ".." in path.parts:
        raise ConfigError(f"{where}: {rel[:80]!r} is not a relative path inside the export directory",
                          "re-export with aiflow split --export")
    full = Path(directory) / path
    if not full.resolve().is_relative_to(Path(directory).resolve()):
        raise ConfigError(f"{where}: {rel[:80]!r} resolves outside the export directory (a symlink)",
                          "remove the link; an export directory holds its own files")
    return full


def _artifacts(manifest: Manifest) -> list[tuple[str, Artifact]]:
    return [(f"pairs.{i}.{side}", getattr(p, side)) for i, p in enumerate(manifest.pairs) for side in ("device", "server")]


def check_files(directory: Path, manifest: Manifest) -> dict[str, onnx.ModelProto]:
    """Paths, sizes and hashes of every file; every ONNX file parsed. Collects every mismatch."""
    problems, graphs = [], {}
    for i, pair in enumerate(manifest.pairs):
        inside(directory, pair.directory, f"pairs.{i}.directory")
        weights = pair.codec.params.get("weights_file")
        if weights is not None:
            path = inside(directory / pair.directory, str(weights), f"pairs.{i}.codec.params.weights_file")
            if not path.is_file():
                problems.append(f"pairs.{i}.codec.params.weights_file: {path.name} missing")
    for field, art in _artifacts(manifest):
        path = inside(directory, art.file, f"{field}.file")
        if not path.is_file():
            problems.append(f"{field}.file: {art.file} missing")
            continue
        if path.stat().st_size != art.size_bytes:
            problems.append(f"{field}.size_bytes: {art.file} is {path.stat().st_size} bytes, manifest says {art.size_bytes}")
        digest = sha256_file(path)
        if digest != art.sha256:
            problems.append(f"{field}.sha256: {art.file}: hash mismatch (manifest {art.sha256[:12]}, file {digest[:12]})")
            continue
        try:
            graphs[field] = onnx.load(str(path), load_external_data=False)
        except Exception:  # noqa: BLE001 - protobuf raises several types for garbage
            problems.append(f"{field}.file: {art.file} is not a valid ONNX model")
    if problems:
        raise ConfigError(f"{directory}: " + "; ".join(problems[:4]) + (f" (and {len(problems) - 4} more)"
                                                                     if len(problems) > 4 else ""),
                          "re-export with aiflow split --export --force")
    return graphs


def graph_decls(proto: onnx.ModelProto, which: str) -> list[TensorDecl]:
    """The graph's own inputs (initializers excluded) or outputs as declarations."""
    inits = {i.name for i in proto.graph.initializer}
    values = proto.graph.input if which == "inputs" else proto.graph.output
    decls = []
    for v in values:
        if which == "inputs" and v.name in inits:
            continue
        t = v.type.tensor_type
        shape: list[int | str] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        decls.append(TensorDecl(name=v.name, shape=shape, dtype=_ELEM.get(t.elem_type, f"onnx-type-{t.elem_type}")))
    return decls


def _compare(field: str, declared: list[TensorDecl], actual: list[TensorDecl], file: str) -> list[str]:
    if [d.name for d in declared] != [a.name for a in actual]:
        return [f"{field}: names {[d.name for d in declared][:6]} but {file} has {[a.name for a in actual][:6]}"]
    problems = []
    for k, (d, a) in enumerate(zip(declared, actual)):
        if d.dtype != a.dtype:
            problems.append(f"{field}.{k}.dtype: manifest says {d.dtype}, {file} has {a.dtype}")
        if len(d.shape) != len(a.shape) or any(x != y for x, y in zip(d.shape, a.shape)):
            problems.append(f"{field}.{k}.shape: manifest says {d.shape}, {file} has {a.shape}")
    return problems


def check_declarations(directory: Path, manifest: Manifest, graphs: dict[str, onnx.ModelProto]) -> None:
    """Declared tensors against the graphs, and the crossing tensors on both sides of the link."""
    problems = []
    for i, pair in enumerate(manifest.pairs):
        for side in ("device", "server"):
            art: Artifact = getattr(pair, side)
            for which in ("inputs", "outputs"):
                problems += _compare(f"pairs.{i}.{side}.{which}", getattr(art, which),
                                     graph_decls(graphs[f"pairs.{i}.{side}"], which), art.file)
        # token ids cross in a speculative export: an input of both the draft and the target
        dev_out = {d.name: d for d in (pair.device.inputs if manifest.speculative else pair.device.outputs)}
        srv_in = {d.name: d for d in pair.server.inputs}
        if manifest.speculative is not None:
            vocab = {side: next((d.shape[-1] for d in getattr(pair, side).outputs if d.name == "logits"), None)
                     for side in ("device", "server")}
            if vocab["device"] != manifest.speculative.vocab_size or vocab["server"] != manifest.speculative.vocab_size:
                problems.append(f"speculative.vocab_size: {manifest.speculative.vocab_size}, but the draft scores "
                                f"{vocab['device']} tokens and the target {vocab['server']}")
        if not pair.crossing:
            problems.append(f"pairs.{i}.crossing: empty (nothing would cross the link)")
        for k, c in enumerate(pair.crossing):
            device_side = "device input" if manifest.speculative else "device output"
            for side, table in ((device_side, dev_out), ("server input", srv_in)):
                if table.get(c.name) != c:
                    problems.append(f"pairs.{i}.crossing.{k}: '{c.name}' {c.dtype}{c.shape} is not a {side} of that "
                                    "shape and dtype")
        for k, e in enumerate(pair.exits):
            if e.output not in dev_out:
                problems.append(f"pairs.{i}.exits.{k}.output: '{e.output}' is not a device output")
    if problems:
        raise ConfigError(f"{directory / 'manifest.json'}: " + "; ".join(problems[:3])
                          + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""),
                          "the manifest and the ONNX files disagree: re-export with aiflow split --export --force")


def check_cuts(directory: Path, manifest: Manifest, model: SegmentedModel) -> None:
    where = directory / "manifest.json"
    if model.fingerprint() != manifest.source_model.fingerprint:
        raise ConfigError(f"{where}: field 'source_model.fingerprint': exported from different weights than "
                          f"{manifest.source_model.spec} has now", "re-export the pair from the model you hold")
    for i, pair in enumerate(manifest.pairs):
        if pair.cut not in model.cuts:
            raise ConfigError(f"{where}: field 'pairs.{i}.cut': '{pair.cut[:40]}' is not a cut of {model.name}",
                              "valid cuts: " + ", ".join(model.cuts))
        if model.cuts.index(pair.cut) != pair.cut_index:
            raise ConfigError(f"{where}: field 'pairs.{i}.cut_index': {pair.cut_index}, but {pair.cut} is cut "
                              f"{model.cuts.index(pair.cut)} of {model.name}", "re-export with aiflow split --export")


def verify_export_dir(directory: Path, count: int = 50, trust_remote_code: bool = False,
                      trust_source: bool = False) -> Manifest:
    if count < 1:
        raise InputError(f"--verify-count must be at least 1, got {count}", "for example --verify-count 50")
    directory = Path(directory)
    manifest = load_manifest(directory)
    check_declarations(directory, manifest, check_files(directory, manifest))
    model = load_model_named_in_file(manifest.source_model.spec,
                                     f"{directory / 'manifest.json'}: field 'source_model.spec'", trust_source,
                                     trust_remote_code)
    if manifest.speculative is not None:
        pair = manifest.pairs[0]
        pair.verification = verify_speculative(directory, manifest, model)
        if not pair.verification.passed:
            raise VerificationError(f"{directory}: speculative greedy decoding does not reproduce the target's own "
                                    f"(token agreement {pair.verification.agreement:.3f})")
        return manifest
    check_cuts(directory, manifest, model)
    inputs, source = real_inputs(model, "verification", count)
    failures = []
    for pair in manifest.pairs:
        if pair.kv_cache:
            from aiflow_cli.export.lm_pair import verify_lm_pair

            pair.verification = verify_lm_pair(model, directory, pair)
        else:
            lossless = pair.codec.name == "fp32"
            pair.verification = verify_pair(model, directory, pair, inputs, source, lossless=lossless)
        if not pair.verification.passed:
            v = pair.verification
            failures.append(f"{pair.cut} (agreement {v.agreement}, max diff {v.max_abs_diff:.3g} against "
                            f"{v.reference})")
    if failures:
        raise VerificationError(f"{directory}: pairs do not reproduce their reference: " + "; ".join(failures))
    return manifest
