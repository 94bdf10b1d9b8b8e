"""Example inputs for profiling and export: real sample images where available, fixed token ids otherwise.

Without ``../shared/data`` the image input falls back to a seeded random tensor; that is fine for
timing and counting but not for anything judged on accuracy, so :func:`image_input_source` says
which one was used and reports carry it.
"""

from __future__ import annotations

import torch

from aiflow_cli.data.imagenet import imagenet_sample_dir, load_image_tensor, read_labels

__all__ = ["image_input", "image_input_source", "token_input", "encoder_input"]


def _have_photos(size: int) -> bool:
    return size == 224 and (imagenet_sample_dir() / "labels.csv").is_file()


def image_input(batch: int, size: int = 224) -> torch.Tensor:
    """``batch`` real photos from the ImageNet sample (cycled), or a seeded random tensor without it."""
    if _have_photos(size):
        records = read_labels()
        return torch.stack([load_image_tensor(records[i % len(records)].path) for i in range(batch)])
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def image_input_source(size: int = 224) -> str:
    if _have_photos(size):
        return f"ImageNet-sample photos ({imagenet_sample_dir()})"
    return f"seeded random tensor: {imagenet_sample_dir()} is absent (set AIFLOW_DATA for real photos)"


def token_input(batch: int, seq_len: int, vocab_size: int) -> torch.Tensor:
    """Seeded token ids; cost depends on the length, not on which tokens."""
    low = min(1000, vocab_size // 2)
    return torch.randint(low, vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(0))


def encoder_input(batch: int, seq_len: int, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = token_input(batch, seq_len, vocab_size)
    return ids, torch.ones_like(ids)
