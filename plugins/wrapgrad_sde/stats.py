"""Statistics over training seeds and samples for the paper's comparison.

Each model kind is trained at ``R`` seeds and each trained model is scored on the same ``n``
evaluated samples, so a kind's scores form a matrix ``s[r, i]`` whose rows (seeds) and columns
(samples) are crossed. Per kind:

* the **mean** :math:`\\bar s = \\frac{1}{Rn}\\sum_{r,i} s_{ri}`;
* its **95% interval**: a percentile bootstrap that resamples the seeds *and* the samples with
  replacement, independently (a crossed two-way bootstrap, ``B`` replicates, seeded), so that it
  counts the variation between training runs as well as between images (with one seed: the
  samples only).

Between two kinds A (expected worse) and B (expected better) on the same seeds and samples, the
paired improvements ``d[r, i]`` (signed so that positive means B is better) give

* ``improvement``: their mean;
* ``p_bootstrap``: the one-sided p of the crossed bootstrap of the mean improvement (the share of
  replicates at or below 0);
* ``p_wilcoxon``: the paired one-sided Wilcoxon signed-rank test on the seed-averaged
  per-sample improvements;
* ``per_seed``: the mean improvement at each seed.

A step is **significant** when both p values are below ``alpha`` and the improvement has the
same sign at every seed. Columns (samples) with a non-finite score at any seed are dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from wrapgrad.stats import BOOTSTRAP, bootstrap_means, seed_matrix

__all__ = ["BOOTSTRAP", "bootstrap_means", "compare_kinds", "mean_interval", "seed_matrix"]

def _finite_columns(*matrices: np.ndarray) -> np.ndarray:
    keep = np.ones(matrices[0].shape[1], dtype=bool)
    for m in matrices:
        keep &= np.all(np.isfinite(m), axis=0)
    return keep


def mean_interval(
    rows: Sequence[Sequence[float | None]], confidence: float = 0.95, n_boot: int = BOOTSTRAP
) -> dict[str, Any]:
    """``{"mean", "low", "high", "n", "seeds", "per_seed"}`` of a kind's scores (module
    docstring)."""
    m = seed_matrix(rows)
    m = m[:, _finite_columns(m)]
    if m.shape[1] == 0:
        nan = math.nan
        return {"mean": nan, "low": nan, "high": nan, "n": 0, "seeds": m.shape[0], "per_seed": []}
    boot = bootstrap_means(m, n_boot)
    lo, hi = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {
        "mean": float(m.mean()),
        "low": float(lo),
        "high": float(hi),
        "n": int(m.shape[1]),
        "seeds": int(m.shape[0]),
        "per_seed": [float(v) for v in m.mean(axis=1)],
    }


def _wilcoxon(diff: np.ndarray) -> float:
    from scipy import stats

    if diff.size == 0 or np.all(diff == 0):
        return 1.0
    return float(stats.wilcoxon(diff, alternative="greater").pvalue)


def compare_kinds(
    worse: Sequence[Sequence[float | None]],
    better: Sequence[Sequence[float | None]],
    higher_is_better: bool,
    alpha: float = 0.05,
    n_boot: int = BOOTSTRAP,
) -> dict[str, Any]:
    """Is ``better`` better than ``worse``? (module docstring; both ``(R, n)`` on the same seeds
    and samples.)"""
    a, b = seed_matrix(worse), seed_matrix(better)
    if a.shape != b.shape:
        raise ValueError(f"better: expected the shape of worse {a.shape}, got {b.shape}")
    keep = _finite_columns(a, b)
    d = (b - a)[:, keep]
    if not higher_is_better:
        d = -d
    if d.shape[1] == 0:
        nan = math.nan
        return {
            "improvement": nan,
            "p_bootstrap": nan,
            "p_wilcoxon": nan,
            "per_seed": [],
            "n": 0,
            "significant": False,
            "reversed_significant": False,
        }
    boot = bootstrap_means(d, n_boot)
    per_seed = d.mean(axis=1)
    p_boot = float(np.mean(boot <= 0))
    p_rev = float(np.mean(boot >= 0))
    p_wil = _wilcoxon(d.mean(axis=0))
    p_wil_rev = _wilcoxon(-d.mean(axis=0))
    return {
        "improvement": float(d.mean()),
        "p_bootstrap": p_boot,
        "p_wilcoxon": p_wil,
        "per_seed": [float(v) for v in per_seed],
        "n": int(d.shape[1]),
        "significant": bool(p_boot < alpha and p_wil < alpha and np.all(per_seed > 0)),
        "reversed_significant": bool(p_rev < alpha and p_wil_rev < alpha and np.all(per_seed < 0)),
    }
