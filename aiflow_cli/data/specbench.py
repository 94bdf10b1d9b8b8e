"""Spec-Bench prompts (``../shared/data/spec-bench/question.jsonl``): the first user turn of each question.

Categories: MT-Bench's eight (writing, roleplay, reasoning, math, coding, extraction, stem,
humanities) plus translation, summarization, qa, math_reasoning and rag. ``spread`` picks prompts
round-robin over the categories, so a small sample still covers all of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from aiflow_cli.data.imagenet import default_data_root
from aiflow_cli.errors import ConfigError

__all__ = ["Prompt", "specbench_path", "read_prompts"]


@dataclass(frozen=True)
class Prompt:
    question_id: int
    category: str
    text: str


def specbench_path() -> Path:
    return default_data_root() / "spec-bench" / "question.jsonl"


def read_prompts(count: int | None = None, spread: bool = True, path: Path | None = None) -> list[Prompt]:
    from aiflow_cli.schemas.loading import read_text

    path = Path(path) if path is not None else specbench_path()
    prompts = []
    for n, line in enumerate(read_text(path, "Spec-Bench file").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompts.append(Prompt(int(row["question_id"]), str(row["category"]), str(row["turns"][0])))
        except (json.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
            raise ConfigError(f"{path}: line {n}: not a Spec-Bench question (question_id, category, turns)") from None
    if spread:
        by_category: dict[str, list[Prompt]] = {}
        for p in prompts:
            by_category.setdefault(p.category, []).append(p)
        queues = list(by_category.values())
        prompts = [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]
    return prompts[:count] if count is not None else prompts
