"""Report statistics that count the Monte-Carlo draws as well as the samples.

An enhanced map is a Monte-Carlo estimate: the same ``N`` weight samples (NoiseGrad) or input
draws serve every image of one run, so per-sample scores are conditional on one set of draws.
The pipeline therefore repeats every enhancer over ``R`` seeds (``[explain].replicates``) and
keeps, per method, variant and metric, the scores ``s[r, i]`` of seed ``r`` and sample ``i``.

*Means and intervals.* The reported mean is :math:`\\bar s = \\frac1{Rn} \\sum_{r,i} s_{ri}`.
With ``R >= 2`` its 95% interval is a percentile bootstrap over seeds *and* samples: each of
``B = 2000`` replicates resamples the ``R`` seeds and the ``n`` samples with replacement
(crossed, since every seed's draws serve every sample) and recomputes the mean; with one seed
(or a variant without noise) it is the Student-t interval
:math:`\\bar s \\pm t_{0.975,\\,n-1}\\, \\mathrm{sd}(s) / \\sqrt n`.

*Expectations* ("Baseline < SG < NG") are judged step by step on the paired differences
``d[r, i]`` (signed so that positive is an improvement). A step *held* when the mean difference
is positive; it is *significant* when all of

* the paired one-sided Wilcoxon signed-rank test (:func:`scipy.stats.wilcoxon`) on the
  seed-averaged per-sample differences gives p < alpha (the NoiseGrad paper's Table 1 test,
  Bykov et al. 2022: "according to the Wilcoxon signed-rank test for p = 0.05"),
* the paired bootstrap over seeds and samples (as above) puts at most a share alpha of its
  replicate means at or below zero (one-sided p), and
* the mean difference is positive at every seed: a difference that flips sign across seeds is
  never significant.

Pairs with a NaN score are dropped. The bootstrap is seeded (0), so a report rendered again
from ``results.json`` is identical.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from wrapgrad.errors import WrapgradValueError
from wrapgrad.stats import BOOTSTRAP, bootstrap_means, seed_matrix

__all__ = [
    "BOOTSTRAP",
    "bootstrap_means",
    "check_expectation",
    "mean_ci",
    "paired_wilcoxon",
    "seed_matrix",
    "seeded_mean_ci",
    "step_test",
]

def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, int]:
    """``(mean, low, high, n)``: the mean of the finite values and its Student-t interval.

    With ``n = 1`` there is no spread to estimate, so the interval is ``(nan, nan)`` (reported
    as n/a), never a zero-width interval; with ``n = 0`` every number is NaN.
    """
    from scipy import stats

    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan, math.nan, 1
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


def seeded_mean_ci(
    by_seed: Sequence[Sequence[float | None]], confidence: float = 0.95
) -> tuple[float, float, float, int]:
    """``(mean, low, high, n)`` over seeds and samples: the bootstrap interval of the module
    docstring for two or more seeds, :func:`mean_ci` of the one list otherwise. ``n`` counts
    the samples with a finite score at every seed."""
    m = seed_matrix(by_seed)
    if m.shape[0] == 1:
        return mean_ci(m[0].tolist(), confidence)
    finite = m[:, np.all(np.isfinite(m), axis=0)]
    n = int(finite.shape[1])
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    boot = bootstrap_means(m)
    lo, hi = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(finite.mean()), float(lo), float(hi), n


def paired_wilcoxon(
    worse: Sequence[float], better: Sequence[float], higher_is_better: bool
) -> float:
    """One-sided p-value of the paired Wilcoxon signed-rank test that ``better`` beats ``worse``.

    Pairs with a NaN are dropped. Returns 1.0 when every difference is zero and NaN when no pair
    is left.
    """
    from scipy import stats

    a = np.asarray(worse, dtype=np.float64)
    b = np.asarray(better, dtype=np.float64)
    if a.shape != b.shape:
        raise WrapgradValueError(
            f"better: expected as many scores as worse ({a.shape[0]}), got {b.shape[0]}"
        )
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size == 0:
        return math.nan
    diff = (b - a) if higher_is_better else (a - b)
    if np.all(diff == 0):
        return 1.0
    return float(stats.wilcoxon(diff, alternative="greater").pvalue)


def _paired(worse: np.ndarray, better: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """``(R, n)`` improvements, seed by seed; a one-seed side (a variant without noise) is the
    same at every seed of the other."""
    if worse.shape[1] != better.shape[1]:
        raise WrapgradValueError(
            f"better: expected as many samples as worse ({worse.shape[1]}), got {better.shape[1]}"
        )
    if worse.shape[0] != better.shape[0] and 1 not in (worse.shape[0], better.shape[0]):
        raise WrapgradValueError(
            f"better: expected as many seeds as worse ({worse.shape[0]}) or one, got "
            f"{better.shape[0]}"
        )
    diff = better - worse  # broadcasts a single row
    return diff if higher_is_better else -diff


def step_test(
    worse: Sequence[Sequence[float | None]],
    better: Sequence[Sequence[float | None]],
    higher_is_better: bool,
) -> dict[str, Any]:
    """One expected step, ``better`` over ``worse``, from their per-seed scores.

    Returns ``{"improved", "p", "p_bootstrap", "seed_differences", "consistent"}``: whether the
    mean improves, the one-sided Wilcoxon p-value on the seed-averaged per-sample scores, the
    bootstrap p-value over seeds and samples, the mean improvement at each seed, and whether it
    is positive at every seed (see the module docstring).
    """
    w, b = seed_matrix(worse), seed_matrix(better)
    d = _paired(w, b, higher_is_better)
    keep = np.all(np.isfinite(d), axis=0)
    d = d[:, keep]
    if d.shape[1] == 0:
        return {
            "improved": False,
            "p": math.nan,
            "p_bootstrap": math.nan,
            "seed_differences": [],
            "consistent": False,
        }
    per_seed = d.mean(axis=1)
    boot = bootstrap_means(d)
    averaged = d.mean(axis=0)
    p = 1.0 if np.all(averaged == 0) else paired_wilcoxon(np.zeros_like(averaged), averaged, True)
    return {
        "improved": bool(d.mean() > 0),
        "p": p,
        "p_bootstrap": float((1 + np.sum(boot <= 0)) / (len(boot) + 1)),
        "seed_differences": [float(v) for v in per_seed],
        "consistent": bool(np.all(per_seed > 0)),
    }


def check_expectation(
    scores: Mapping[str, Sequence[float]],
    order: Sequence[str],
    best: str | None,
    higher_is_better: bool,
    alpha: float = 0.05,
    by_seed: Mapping[str, Sequence[Sequence[float | None]]] | None = None,
) -> dict[str, Any]:
    """Judge an expected ranking of enhancers on one metric.

    ``order`` lists labels from worst to best: each step must improve the mean (``held``) and is
    ``significant`` by the three rules of the module docstring. ``best`` must have the best mean
    and beat every other label (each comparison tested). ``scores`` are the seed-averaged
    per-sample scores; ``by_seed`` (label -> one list per seed) the per-seed ones (None: one
    seed, ``scores`` itself).

    Returns:
        ``{"held": bool, "significant": bool, "seeds": int, "steps": [{"worse", "better",
        "mean_worse", "mean_better", "improved", "p", "p_bootstrap", "seed_differences",
        "consistent", "significant"}...]}``.
    """

    def seeds(label: str) -> Sequence[Sequence[float | None]]:
        if by_seed is not None and by_seed.get(label):
            return by_seed[label]
        return [list(scores[label])]

    def mean(label: str) -> float:
        m = seed_matrix(seeds(label))
        return float(np.nanmean(m)) if np.isfinite(m).any() else math.nan

    pairs: list[tuple[str, str]] = list(itertools.pairwise(order))
    if best is not None:
        pairs += [(other, best) for other in scores if other != best and (other, best) not in pairs]
    steps = []
    for worse, better in pairs:
        test = step_test(seeds(worse), seeds(better), higher_is_better)
        significant = (
            test["improved"]
            and test["consistent"]
            and test["p"] < alpha
            and test["p_bootstrap"] < alpha
        )
        steps.append(
            {
                "worse": worse,
                "better": better,
                "mean_worse": mean(worse),
                "mean_better": mean(better),
                **test,
                "significant": bool(significant),
            }
        )
    held = all(s["improved"] for s in steps)
    significant = held and all(s["significant"] for s in steps)
    n_seeds = max((len(seeds(label)) for label in scores), default=1)
    return {"held": held, "significant": significant, "seeds": n_seeds, "steps": steps}
