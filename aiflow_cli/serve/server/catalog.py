"""Which v2 model serves each pair of an export: the manifest decides, after its hashes and
declarations were checked (a mismatch refuses to serve: exit 2). No model source is loaded."""

from __future__ import annotations

from pathlib import Path

from aiflow_cli.export.opened import open_export
from aiflow_cli.serve.protocol import MAX_BATCH
from aiflow_cli.serve.server.halves import LMPairModel, PairModel, ServedModel
from aiflow_cli.serve.server.verifier import VerifierModel

__all__ = ["load_served_models"]


def load_served_models(directory: Path, threads: int | None = None, max_sessions: int = 64,
                       idle_seconds: float = 300.0, max_batch: int = MAX_BATCH) -> dict[str, ServedModel]:
    """Every server half of an export: image and encoder pairs, causal-LM pairs (a cache per session)
    and a speculative-decoding target (verifies drafts; a cache per session)."""
    opened = open_export(directory)
    directory, manifest = opened.directory, opened.manifest
    models: dict[str, ServedModel] = {}
    for pair, name in ((p.pair, p.name) for p in opened.pairs):
        if manifest.speculative is not None:
            models[name] = VerifierModel(directory, name, pair, manifest.speculative, threads, max_sessions, idle_seconds)
        elif pair.kv_cache:
            models[name] = LMPairModel(directory, name, pair, threads, max_sessions, idle_seconds)
        else:
            models[name] = PairModel(directory, name, pair, threads, max_batch)
    return models
