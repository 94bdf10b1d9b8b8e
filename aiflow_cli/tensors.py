"""Values that cross a cut: a tensor, or a tuple / list / dict of tensors (hidden states and a mask)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["tensors_of", "nbytes_of"]


def tensors_of(value: Any) -> list[torch.Tensor]:
    """Flatten a crossing value (tensor, tuple, list) into its tensors."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in tensors_of(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors_of(v)]
    return []


def nbytes_of(value: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors_of(value))
