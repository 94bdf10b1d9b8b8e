"""``aiflow split verify DIR``: the manifest, the hashes, then the pairs against the unsplit model."""

from __future__ import annotations

from pathlib import Path

from aiflow_cli.errors import ConfigError
from aiflow_cli.export.pair import sha256_file
from aiflow_cli.export.reference_inputs import real_inputs
from aiflow_cli.export.verify import VerificationError, verify_pair
from aiflow_cli.schemas.manifest import Manifest, load_manifest

__all__ = ["check_hashes", "verify_export_dir"]


def check_hashes(directory: Path, manifest: Manifest) -> None:
    """Every ONNX file must exist and match its sha256; collect all mismatches, raise once."""
    problems = []
    for pair in manifest.pairs:
        for art in (pair.device, pair.server):
            path = Path(directory) / art.file
            if not path.is_file():
                problems.append(f"{art.file}: missing")
            elif sha256_file(path) != art.sha256:
                problems.append(f"{art.file}: hash mismatch (manifest {art.sha256[:12]}, file {sha256_file(path)[:12]})")
    if problems:
        raise ConfigError(f"{directory}: " + "; ".join(problems), "re-export with aiflow split --export --force")


def verify_export_dir(directory: Path, count: int = 50, trust_remote_code: bool = False) -> Manifest:
    from aiflow_cli.models import load_model

    directory = Path(directory)
    manifest = load_manifest(directory)
    check_hashes(directory, manifest)
    model = load_model(manifest.source_model["spec"], trust_remote_code=trust_remote_code)
    if model.fingerprint() != manifest.source_model["fingerprint"]:
        raise ConfigError(f"{directory}: exported from different weights than {manifest.source_model['spec']} has now",
                          "re-export the pair from the model you hold")
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
            failures.append(pair.cut)
    if failures:
        raise VerificationError(f"{directory}: pairs at {', '.join(failures)} do not reproduce the unsplit model")
    return manifest
