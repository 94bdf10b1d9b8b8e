"""The library call behind ``aiflow serve-pair generate``: text generation across the link from an
export, by speculative decoding (a draft / target export) or by a split causal LM (an LM pair)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from aiflow_cli.errors import InputError
from aiflow_cli.export.lm_pair import eos_ids
from aiflow_cli.models.sources import load_model_named_in_file
from aiflow_cli.models.speculative import MAX_K, AutoK, Sampling
from aiflow_cli.schemas.manifest import load_manifest
from aiflow_cli.serve.device import V2Client
from aiflow_cli.serve.generate import LMDevice
from aiflow_cli.serve.speculative import SpeculativeDevice, server_only

__all__ = ["GeneratedText", "GenerateSettings", "run_generate", "parse_k"]


def parse_k(text: str) -> int | str:
    """``--k``: a whole number in 1..MAX_K, or ``auto``."""
    if text == "auto":
        return "auto"
    try:
        k = int(text)
    except ValueError:
        raise InputError(f"--k '{text}': expected a whole number or 'auto'", "for example --k 4 or --k auto") from None
    if not 1 <= k <= MAX_K:
        raise InputError(f"--k {k} is out of range", f"draft 1 to {MAX_K} tokens per round, or --k auto")
    return k


@dataclass
class GenerateSettings:
    max_new_tokens: int = 64
    k: int | str = 4
    k_max: int = 16
    sampling: Sampling = field(default_factory=Sampling)
    seed: int = 0
    server_only_baseline: bool = False
    threads: int | None = 1
    token: str | None = None


@dataclass
class GeneratedText:
    prompt: str
    text: str
    tokens: list[int]
    ms_per_token: float
    round_trips: int
    acceptance: float | None = None  # speculative: share of drafts accepted
    ks: list[int] = field(default_factory=list)  # speculative: drafts per round
    bytes_sent: int = 0
    sampling_bytes_per_draft: float | None = None
    resent_prefixes: int = 0
    server_only_ms_per_token: float | None = None
    server_only_tokens: list[int] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_generate(directory: Path, server: str, prompts: list[str], settings: GenerateSettings,
                 progress: Callable[[str, int, int], None] | None = None) -> list[GeneratedText]:
    if settings.max_new_tokens < 1:
        raise InputError(f"--max-new-tokens must be at least 1, got {settings.max_new_tokens}")
    if not prompts:
        raise InputError("no prompt given", "pass --prompt TEXT (repeatable)")
    manifest = load_manifest(directory)
    client = V2Client(server, settings.token)
    out: list[GeneratedText] = []
    try:
        if manifest.speculative is not None:
            device = SpeculativeDevice(directory, settings.threads)
            tokenizer, draft = device.tokenizer(), device.draft_session()
            if not 1 <= settings.k_max <= MAX_K:
                raise InputError(f"--k-max {settings.k_max} is out of range 1..{MAX_K}")
            auto = AutoK(settings.k_max)  # one policy for all prompts: it keeps learning
            for i, prompt in enumerate(prompts):
                if progress:
                    progress("prompts", i, len(prompts))
                ids = tokenizer(prompt)["input_ids"]
                k = auto if settings.k == "auto" else int(settings.k)
                rounds, stats = device.generate(client, ids, settings.max_new_tokens, k, settings.sampling,
                                                settings.seed, draft)
                item = GeneratedText(prompt, tokenizer.decode(rounds.tokens), rounds.tokens, rounds.ms_per_token,
                                     stats.round_trips, rounds.acceptance, rounds.proposed, sum(stats.request_bytes),
                                     None if settings.sampling.greedy else stats.sampling_bytes_per_draft,
                                     stats.resent_prefixes)
                if settings.server_only_baseline:
                    tokens, seconds = server_only(client, device.model, ids, settings.max_new_tokens,
                                                  settings.sampling, settings.seed)
                    item.server_only_tokens = tokens
                    item.server_only_ms_per_token = seconds * 1e3 / max(1, len(tokens))
                out.append(item)
        else:
            lm_pairs = [p for p in manifest.pairs if p.kv_cache]
            if not lm_pairs:
                raise InputError(f"{directory}: neither a speculative export nor a causal-LM pair",
                                 "image and encoder pairs: aiflow serve-pair device DIR")
            if settings.server_only_baseline or not settings.sampling.greedy:
                raise InputError("sampling and --server-only apply to speculative exports only",
                                 "a split causal LM decodes greedily, one round trip per token")
            source = load_model_named_in_file(manifest.source_model.spec,
                                              f"{Path(directory) / 'manifest.json'}: field 'source_model.spec'")
            device_lm = LMDevice(directory, manifest, lm_pairs[0], settings.threads)
            for i, prompt in enumerate(prompts):
                if progress:
                    progress("prompts", i, len(prompts))
                ids = source.tokenizer(prompt)["input_ids"]
                t0 = time.perf_counter()
                gen = device_lm.generate(client, ids, settings.max_new_tokens, eos=eos_ids(source))
                ms = (time.perf_counter() - t0) * 1e3 / max(1, len(gen.tokens))
                out.append(GeneratedText(prompt, source.tokenizer.decode(gen.tokens), gen.tokens, ms, gen.round_trips,
                                         bytes_sent=gen.bytes_sent, resent_prefixes=gen.resent_prefixes))
        if progress:
            progress("prompts", len(prompts), len(prompts))
    finally:
        client.close()
    return out
