"""Example inputs for profiling and export: real sample images where available, fixed token ids otherwise."""

from __future__ import annotations

import torch

from aiflow_cli.data.imagenet import imagenet_sample_dir, load_image_tensor, read_labels

__all__ = ["image_input", "token_input", "encoder_input"]


def image_input(batch: int, size: int = 224) -> torch.Tensor:
    """``batch`` real photos from the ImageNet sample (cycled), or a seeded random tensor without it."""
    if (imagenet_sample_dir() / "labels.csv").is_file() and size == 224:
        records = read_labels()
        return torch.stack([load_image_tensor(records[i % len(records)].path) for i in range(batch)])
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def token_input(batch: int, seq_len: int, vocab_size: int) -> torch.Tensor:
    """Seeded token ids; cost depends on the length, not on which tokens."""
    low = min(1000, vocab_size // 2)
    return torch.randint(low, vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(0))


def encoder_input(batch: int, seq_len: int, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = token_input(batch, seq_len, vocab_size)
    return ids, torch.ones_like(ids)
