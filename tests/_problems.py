"""A small seeded classification problem the training tests share (no data files)."""

from __future__ import annotations

import torch


def bright_band(n: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` 1x8x8 images in [0, 1) and their classes ``i % 3``: uniform noise in [0, 0.5) with
    class ``c``'s band of rows (``dim=2``) or columns (``dim=3``) ``3c, 3c + 1`` brightened by
    0.5, so the class is which third of the image is brightest. Seeded: the same every call."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.5
    y = torch.arange(n) % 3
    for c in range(3):
        band: list[object] = [y == c, slice(None), slice(None), slice(None)]
        band[dim] = slice(3 * c, 3 * c + 2)
        x[tuple(band)] += 0.5
    return x, y
