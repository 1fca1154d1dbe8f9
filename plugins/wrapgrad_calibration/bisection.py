"""Monotone bracketing and bisection for a noise level (pure kernel, no torch).

Given ``f(level)`` that grows with the level (the relative accuracy drop), find ``level`` with
``f(level) ≈ target``: start at ``start``, multiply by ``grow`` until ``f >= target`` (the
bracket ``[lo, hi]`` then has ``f(lo) < target <= f(hi)``), then halve the bracket (geometric
midpoint once ``lo > 0``, so levels of any scale take few steps) until ``|f - target| <= tol``,
the bracket is narrower than ``xtol`` (relative), or ``max_iter`` evaluations. Terminates on any
function: flat curves stop after ``max_expand`` growths (``bracketed=False``), steep ones when
the bracket collapses (``converged=False``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs

__all__ = ["BisectionResult", "bisect_level"]


@attrs.frozen(kw_only=True)
class BisectionResult:
    """Where the search ended."""

    level: float
    """The evaluated level whose value is closest to the target (ties: the smaller level)."""
    value: float
    """``f(level)``."""
    converged: bool
    """True when ``|value - target| <= tol``."""
    bracketed: bool
    """False when no level up to the largest tried reached the target (a flat curve)."""
    points: tuple[tuple[float, float], ...]
    """Every ``(level, f(level))`` evaluated, in order."""
    bracket: tuple[float, float]
    """The final bracket ``(lo, hi)``."""


def bisect_level(
    f: Callable[[float], float],
    target: float,
    *,
    start: float,
    lower: float = 0.0,
    tol: float = 0.0,
    grow: float = 2.0,
    max_expand: int = 20,
    max_iter: int = 30,
    xtol: float = 1e-3,
) -> BisectionResult:
    """Find ``level`` in ``(lower, ∞)`` with ``f(level) ≈ target`` for a non-decreasing ``f``.

    Args:
        f: the function of the level (assumed ``f(lower) < target``; not evaluated there).
        target: the value to reach.
        start: the first level tried (> ``lower``).
        lower: the lower end of the first bracket.
        tol: stop once ``|f(level) - target| <= tol``.
        grow: factor by which the upper end grows while ``f < target``.
        max_expand: at most this many growths.
        max_iter: at most this many evaluations in all.
        xtol: stop once ``hi - lo <= xtol * hi``.

    Returns:
        A :class:`BisectionResult`.
    """
    if not start > lower:
        raise ValueError(f"start: expected a level above lower ({lower}), got {start!r}")
    if not grow > 1.0:
        raise ValueError(f"grow: expected a factor > 1, got {grow!r}")
    points: list[tuple[float, float]] = []

    def ev(level: float) -> float:
        value = float(f(level))
        points.append((level, value))
        return value

    def result(converged: bool, bracketed: bool, lo: float, hi: float) -> BisectionResult:
        level, value = min(points, key=lambda p: (abs(p[1] - target), p[0]))
        return BisectionResult(
            level=level,
            value=value,
            converged=converged or abs(value - target) <= tol,
            bracketed=bracketed,
            points=tuple(points),
            bracket=(lo, hi),
        )

    lo, hi = lower, start
    v = ev(hi)
    expansions = 0
    while v < target:
        if abs(v - target) <= tol:
            return result(True, True, lo, hi)
        if expansions >= max_expand or len(points) >= max_iter:
            return result(False, False, hi, hi)
        lo, hi = hi, hi * grow
        v = ev(hi)
        expansions += 1
    while len(points) < max_iter:
        if abs(v - target) <= tol:
            return result(True, True, lo, hi)
        if hi - lo <= xtol * hi:
            break
        mid = math.sqrt(lo * hi) if lo > 0 else 0.5 * (lo + hi)
        v = ev(mid)
        if v < target:
            lo = mid
        else:
            hi = mid
    return result(False, True, lo, hi)
