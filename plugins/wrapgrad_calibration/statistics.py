"""The relative accuracy drop (:func:`wrapgrad.calibration.relative_drop`, re-exported) and its
bootstrap confidence interval (pure torch kernels)."""

from __future__ import annotations

import torch
from torch import Tensor

from wrapgrad.calibration import relative_drop

__all__ = ["drop_interval", "relative_drop"]


def _multinomial_counts(b: int, n: int, generator: torch.Generator) -> Tensor:
    """``(b, n)`` counts of ``n`` draws with replacement from ``n`` items, ``b`` times."""
    idx = torch.randint(n, (b, n), generator=generator, device=generator.device)
    counts = torch.zeros(b, n, device=generator.device)
    return counts.scatter_add_(1, idx, torch.ones(b, n, device=generator.device))


def drop_interval(
    correct: Tensor,
    clean_correct: Tensor,
    acc_chance: float,
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of AD over noise draws and samples.

    Each replicate resamples the ``K`` draws (rows of ``correct``) and the ``N`` samples (its
    columns, paired with ``clean_correct``) with replacement and recomputes
    AD = 1 − (ACC − ACC(∞)) / (ACC(0) − ACC(∞)); the interval covers the spread a fresh set
    of draws (and a fresh held-out set) would show.

    Args:
        correct: bool ``(K, N)``: draw ``k`` classifies sample ``n`` correctly.
        clean_correct: bool ``(N,)``: the noiseless model classifies sample ``n`` correctly.
        acc_chance: ACC(∞).
        confidence: the interval's coverage.
        n_boot: bootstrap replicates.
        seed: seeds the resampling.

    Returns:
        ``(low, high)``.
    """
    c = correct.float().cpu()
    c0 = clean_correct.float().cpu()
    k, n = c.shape
    g = torch.Generator().manual_seed(int(seed))
    wk = _multinomial_counts(n_boot, k, g)  # (B, K)
    wn = _multinomial_counts(n_boot, n, g)  # (B, N)
    acc = ((wk @ c) * wn).sum(dim=1) / (k * n)
    acc0 = (wn * c0).sum(dim=1) / n
    denom = (acc0 - acc_chance).clamp_min(1e-12)
    ad = 1.0 - (acc - acc_chance) / denom
    q = torch.tensor([(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    lo, hi = torch.quantile(ad, q).tolist()
    return float(lo), float(hi)
