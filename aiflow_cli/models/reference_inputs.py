"""Real inputs for calibration (training data) and verification (evaluation data).

Images: ImageNet sample, train split for calibration, test split (class_index % 5 == 0) for
verification. Text: WikiText-2 valid for calibration, test for verification. Without the data
folder, seeded synthetic inputs are used and the description (which the manifest records as
``verification.inputs``) says so and why.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from aiflow_cli.models.segmented import SegmentedModel

__all__ = ["real_inputs"]


def real_inputs(model: SegmentedModel, purpose: Literal["calibration", "verification"], count: int,
                batch: int = 10) -> tuple[list[Any], str]:
    """(list of input batches, description of where they came from)."""
    missing = ""
    if model.task == "image-classification":
        from aiflow_cli.data.imagenet import (
            imagenet_sample_dir,
            load_batch,
            read_labels,
        )

        if (imagenet_sample_dir() / "labels.csv").is_file():
            split = "train" if purpose == "calibration" else "test"
            records = read_labels(split=split)[:count]
            batches = [load_batch(records[i:i + batch])[0] for i in range(0, len(records), batch)]
            return batches, f"{len(records)} ImageNet-sample images ({split} split)"
        missing = f"{imagenet_sample_dir()} is absent"
    if model.task == "sentence-embedding" and model.tokenizer is not None:
        from aiflow_cli.data.text import FALLBACK_SENTENCES, wikitext_sentences

        split = "valid" if purpose == "calibration" else "test"
        sentences = wikitext_sentences(split, count)
        source = f"{count} WikiText-2 {split} lines"
        if sentences is None:
            sentences, source = FALLBACK_SENTENCES, f"{len(FALLBACK_SENTENCES)} built-in sentences (WikiText-2 absent)"
        batches = []
        for i in range(0, len(sentences), batch):
            enc = model.tokenizer(sentences[i:i + batch], padding=True, truncation=True, max_length=128,
                                  return_tensors="pt")
            batches.append((enc["input_ids"], enc["attention_mask"]))
        return batches, source
    n = max(1, count // batch)
    torch.manual_seed(1 if purpose == "calibration" else 2)
    why = missing or "no real data for this kind of model"
    return [model.make_input(2, None) for _ in range(n)], f"{2 * n} synthetic inputs ({why})"
