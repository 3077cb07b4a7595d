"""Facts about tensors that every path of the layer needs (`_algorithm`, `_pointwise`): the dtype the
statistics are computed in, and the memory format a result is handed back in."""

from __future__ import annotations

import torch
from torch import Tensor


def statistics_dtype(dtype: torch.dtype) -> torch.dtype:
    """Patch statistics are never computed in less than float32 (docs/architecture.md, "Numerics")."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def memory_format_of(x: Tensor) -> torch.memory_format:
    """channels_last (or channels_last_3d) where x is laid out so and not also contiguous, else contiguous."""
    for fmt, rank in ((torch.channels_last, 4), (torch.channels_last_3d, 5)):
        if x.dim() == rank and not x.is_contiguous() and x.is_contiguous(memory_format=fmt):
            return fmt
    return torch.contiguous_format


def in_memory_format_of(y: Tensor, x: Tensor) -> Tensor:
    """y in x's memory format, as convolutions return it (channels_last in, channels_last out)."""
    fmt = memory_format_of(x)
    return y if fmt == torch.contiguous_format else y.contiguous(memory_format=fmt)
