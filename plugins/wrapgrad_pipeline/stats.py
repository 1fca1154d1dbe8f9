"""Report statistics: means with Student-t intervals, and expectations judged with paired
Wilcoxon signed-rank tests.

Per method, variant and metric over the n evaluated samples s_i (NaN scores, e.g. a Quantus
metric that could not be computed for a sample, are left out and counted):

.. math::
    \\bar s \\pm t_{0.975,\\,n-1}\\, \\frac{\\mathrm{sd}(s)}{\\sqrt n}

(a Student-t 95% confidence interval of the mean). Expectations ("Baseline < SG < NG < FG") are
judged step by step with the paired one-sided Wilcoxon signed-rank test
(:func:`scipy.stats.wilcoxon`) on the per-sample scores, as the NoiseGrad paper's Table 1 does
(Bykov et al. 2022: "according to the Wilcoxon signed-rank test for p = 0.05").
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from wrapgrad.errors import WrapgradValueError

__all__ = ["check_expectation", "mean_ci", "paired_wilcoxon"]


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


def check_expectation(
    scores: Mapping[str, Sequence[float]],
    order: Sequence[str],
    best: str | None,
    higher_is_better: bool,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Judge an expected ranking of enhancers on one metric.

    ``order`` lists labels from worst to best: each step must improve the mean (``held``), and is
    ``significant`` when the one-sided paired Wilcoxon p-value is below ``alpha``. ``best`` must
    have the best mean and beat every other label (each comparison tested).

    Returns:
        ``{"held": bool, "significant": bool, "steps": [{"worse", "better", "mean_worse",
        "mean_better", "improved", "p"}...]}``.
    """

    def mean(label: str) -> float:
        return mean_ci(scores[label])[0]

    pairs: list[tuple[str, str]] = list(itertools.pairwise(order))
    if best is not None:
        pairs += [(other, best) for other in scores if other != best and (other, best) not in pairs]
    steps = []
    for worse, better in pairs:
        mw, mb = mean(worse), mean(better)
        improved = bool(mb > mw) if higher_is_better else bool(mb < mw)
        p = paired_wilcoxon(scores[worse], scores[better], higher_is_better)
        steps.append(
            {
                "worse": worse,
                "better": better,
                "mean_worse": mw,
                "mean_better": mb,
                "improved": improved,
                "p": p,
            }
        )
    held = all(s["improved"] for s in steps)
    significant = held and all(s["p"] < alpha for s in steps)
    return {"held": held, "significant": significant, "steps": steps}
