"""Seed-and-sample statistics shared by the reports: scores ``s[r, i]`` of ``R`` seeds (Monte-Carlo
draws or training runs) on the same ``n`` samples, and the crossed two-way bootstrap of their
mean (pure NumPy kernels).

Since every seed's draws serve every sample, seeds and samples are crossed: each of ``B``
replicates resamples the ``R`` rows and the ``n`` columns with replacement, independently, and
recomputes :math:`\\bar s = \\frac1{Rn} \\sum_{r,i} w_r\\, s_{ri}\\, v_i` with the multiplicities
``w``, ``v``; with one row the columns alone are resampled. The interval or one-sided p drawn
from these replicates counts the variation between seeds as well as between samples.

>>> m = seed_matrix([[1.0, 2.0, None], [3.0, 4.0, 5.0]])
>>> m.shape
(2, 3)
>>> bool(np.all(bootstrap_means(m, 8) == bootstrap_means(m, 8)))  # seeded
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from wrapgrad.errors import WrapgradValueError

__all__ = ["BOOTSTRAP", "bootstrap_means", "seed_matrix"]

#: Bootstrap replicates of the seed-and-sample intervals and tests.
BOOTSTRAP = 2000


def seed_matrix(by_seed: Sequence[Sequence[float | None]]) -> np.ndarray:
    """``(R, n)`` float64 scores of ``R`` seeds (None as NaN); every row one length."""
    rows = [[math.nan if v is None else float(v) for v in row] for row in by_seed]
    if not rows or len({len(r) for r in rows}) != 1:
        raise WrapgradValueError(
            f"by_seed: expected one score list per seed, all of one length, got lengths "
            f"{[len(r) for r in rows]}"
        )
    return np.asarray(rows, dtype=np.float64)


def _counts(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    """``(b, n)`` counts of ``n`` draws with replacement from ``n`` items, ``b`` times."""
    idx = rng.integers(0, n, size=(b, n))
    counts = np.zeros((b, n))
    np.add.at(counts, (np.arange(b)[:, None], idx), 1.0)
    return counts


def bootstrap_means(matrix: np.ndarray, n_boot: int = BOOTSTRAP, seed: int = 0) -> np.ndarray:
    """``(n_boot,)`` means of ``matrix`` ``(R, n)`` with its seeds (rows) and samples (columns)
    resampled with replacement, independently (the crossed two-way bootstrap above). Columns
    with a NaN are dropped; a single row is resampled over samples only."""
    m = matrix[:, np.all(np.isfinite(matrix), axis=0)]
    r, n = m.shape
    if n == 0:
        return np.full(n_boot, np.nan)
    rng = np.random.default_rng(seed)
    wr = _counts(rng, n_boot, r) if r > 1 else np.ones((n_boot, 1))
    wn = _counts(rng, n_boot, n)
    return np.einsum("br,rn,bn->b", wr, m, wn) / (r * n)
