"""``generate()``: text generation across the link from an export, by speculative decoding (a draft /
target export) or by a split causal LM (an LM pair)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

from pydantic import Field, field_validator, model_validator

from aiflow_cli.errors import InputError
from aiflow_cli.export.lm_pair import eos_ids
from aiflow_cli.models.sources import load_model_named_in_file
from aiflow_cli.models.speculative import MAX_K, AutoK, Sampling
from aiflow_cli.schemas.manifest import load_manifest
from aiflow_cli.serve.device.client import V2Client
from aiflow_cli.serve.device.lm import LMDevice
from aiflow_cli.serve.device.speculative import SpeculativeDevice, server_only
from aiflow_cli.settings import Settings

__all__ = ["GeneratedText", "GenerateSettings", "generate", "parse_k"]


def parse_k(text: str | int) -> int | str:
    """``--k``: a whole number in 1..MAX_K, or ``auto``."""
    if text == "auto":
        return "auto"
    try:
        k = int(text)
    except (TypeError, ValueError):
        raise InputError(f"--k '{text}': expected a whole number or 'auto'", "for example --k 4 or --k auto") from None
    if not 1 <= k <= MAX_K:
        raise InputError(f"--k {k} is out of range", f"draft 1 to {MAX_K} tokens per round, or --k auto")
    return k


class GenerateSettings(Settings):
    directory: Path = Field(description="A folder written by aiflow split speculative or aiflow split --export.")
    server: str = Field(description="The v2 server (or a link in front of it), HOST:PORT.")
    prompt: list[str] = Field(description="Text to continue (repeatable).")
    max_new_tokens: int = Field(64, ge=1, le=32_768, description="Tokens to generate per prompt.")
    k: Union[int, str] = Field("4", description="Speculative: drafts per round (1-64), or auto (chosen each round "
                                                "from the measured acceptance, draft time and round trip).")
    k_max: int = Field(16, ge=1, le=MAX_K, description="With --k auto: the largest k it may pick.")
    temperature: float = Field(0.0, description="0 is greedy (token-identical to the target alone); above 0 samples "
                                                "exactly from the target.")
    top_p: float = Field(1.0, description="Sampling: nucleus cut.")
    top_k: int = Field(0, description="Sampling: keep the k most likely tokens (0: all).")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Sampling seed.")
    overlap: bool = Field(False, description="Speculative: draft the next block while each verification is in "
                                             "flight, kept when every draft and the guessed extra token were right "
                                             "(lossless, as without).")
    server_only: bool = Field(False, description="Speculative: also time the target generating alone on the server "
                                                 "(the baseline).")
    token_file: Optional[Path] = Field(None, description="A file holding the server's bearer token.")
    threads: Optional[int] = Field(1, ge=1, le=1024, description="onnxruntime threads on the device.")

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, value: object) -> object:
        return parse_k(value)  # type: ignore[arg-type]

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, value: list[str]) -> list[str]:
        if not value:
            raise InputError("no prompt given", "pass --prompt TEXT (repeatable)")
        for i, text in enumerate(value):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # bytes the terminal could not decode arrive as lone surrogates
                raise InputError(f"--prompt {i + 1}: not valid UTF-8 text", "pass the prompt as UTF-8") from None
        return value

    @property
    def sampling(self) -> Sampling:
        return Sampling(self.temperature, self.top_p, self.top_k)

    @model_validator(mode="after")
    def _sampling(self) -> "GenerateSettings":
        self.sampling  # noqa: B018 - Sampling checks temperature, top-p and top-k
        return self


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


def generate(settings: GenerateSettings, progress: Callable[[str, int, int], None] | None = None
             ) -> list[GeneratedText]:
    """Generate a continuation of every prompt across the link (speculative or split causal LM)."""
    from aiflow_cli.serve.binding import read_token

    directory, prompts = settings.directory, settings.prompt
    manifest = load_manifest(directory)
    client = V2Client(settings.server, read_token(settings.token_file) if settings.token_file else None)
    out: list[GeneratedText] = []
    try:
        if manifest.speculative is not None:
            device = SpeculativeDevice(directory, settings.threads)
            tokenizer, draft = device.tokenizer(), device.draft_session()
            auto = AutoK(settings.k_max)  # one policy for all prompts: it keeps learning
            for i, prompt in enumerate(prompts):
                if progress:
                    progress("prompts", i, len(prompts))
                ids = tokenizer(prompt)["input_ids"]
                k = auto if settings.k == "auto" else int(settings.k)
                rounds, stats = device.generate(client, ids, settings.max_new_tokens, k, settings.sampling,
                                                settings.seed, draft, overlap=settings.overlap)
                item = GeneratedText(prompt, tokenizer.decode(rounds.tokens), rounds.tokens, rounds.ms_per_token,
                                     stats.round_trips, rounds.acceptance, rounds.proposed, sum(stats.request_bytes),
                                     None if settings.sampling.greedy else stats.sampling_bytes_per_draft,
                                     stats.resent_prefixes)
                if settings.server_only:
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
            if settings.server_only or not settings.sampling.greedy:
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
