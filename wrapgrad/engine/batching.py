"""Sample-major batching: the ``c`` samples of a chunk travel as one batch of ``c · B`` rows.

Rows ``[i·B, (i+1)·B)`` are the chunk's ``i``-th sample; targets, baselines, feature masks and
batch-first additional forward arguments are repeated in the same blocks.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = ["PER_SAMPLE_KWARGS", "tile", "tile_kwargs", "tile_target"]

#: attribute() keywords holding per-sample tensors that must be tiled with the batch.
PER_SAMPLE_KWARGS = ("baselines", "additional_forward_args", "feature_mask")


def tile(value: Any, c: int, batch: int) -> Any:
    """Repeat per-sample values ``c`` times along the batch (sample-major blocks); values that
    are not batch-first (scalars, broadcasting tensors) pass unchanged."""
    if c == 1:
        return value
    if isinstance(value, Tensor):
        if value.dim() >= 1 and value.shape[0] == batch:
            return value.repeat(c, *([1] * (value.dim() - 1)))
        return value
    if isinstance(value, tuple):
        return tuple(tile(v, c, batch) for v in value)
    if isinstance(value, list):
        if len(value) == batch and not any(isinstance(v, Tensor) for v in value):
            return value * c
        return [tile(v, c, batch) for v in value]
    return value


def tile_target(target: Any, c: int, batch: int) -> Any:
    """Captum's target forms repeated for ``c`` samples (an int or a tuple applies to all rows)."""
    if c == 1 or target is None or isinstance(target, (int, tuple)):
        return target
    if isinstance(target, Tensor):
        if target.dim() >= 1 and target.shape[0] == batch and target.numel() > 1:
            return target.repeat(c, *([1] * (target.dim() - 1)))
        return target
    if isinstance(target, list):
        return target * c if len(target) == batch else target
    return target


def tile_kwargs(kwargs: dict[str, Any], c: int, batch: int) -> dict[str, Any]:
    """``attribute`` keywords for a chunk of ``c`` samples: per-sample ones tiled."""
    return {
        key: (tile(v, c, batch) if key in PER_SAMPLE_KWARGS else v) for key, v in kwargs.items()
    }
