"""Streaming reduction of Monte-Carlo samples: running moments over chunks, and the result record.

Chunks of samples are reduced as they come (:class:`RunningMoments`), so the memory an estimate
holds is a few maps whatever the number of samples; :class:`Reduction` does it for every part
of an explainer's output (tuple inputs give tuple maps) and keeps the samples when asked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import torch
from torch import Tensor

from wrapgrad.errors import WrapgradTypeError, WrapgradValueError

from .config import check_aggregate

__all__ = ["MonteCarloResult", "Reduction", "RunningMoments", "flatten_output"]


class RunningMoments:
    """Streaming mean, mean of squares and unbiased variance over chunks of samples.

    ``update(chunk)`` takes a chunk of shape ``(c, ...)`` (``c`` samples of one map); chunks are
    merged with Chan et al.'s parallel form of Welford's algorithm, so the memory held is three
    maps, whatever the number of samples:

    .. math::
        n = n_a + n_b,\\quad \\delta = \\bar x_b - \\bar x_a,\\quad
        \\bar x = \\bar x_a + \\delta\\, n_b / n,\\quad
        M_2 = M_{2,a} + M_{2,b} + \\delta^2 n_a n_b / n,\\quad
        s^2 = M_2 / (n - 1).

    Args:
        track_square: also keep the mean of squares (``result("mean_square")``).
        track_variance: also keep ``M_2`` (``result("variance")``).
        keep_graph: keep the autograd graph of the chunks (differentiable maps); by default
            chunks are detached.
    """

    def __init__(
        self, *, track_square: bool = False, track_variance: bool = False, keep_graph: bool = False
    ) -> None:
        self.count = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None
        self.sq: Tensor | None = None
        self.track_square = track_square
        self.track_variance = track_variance
        self.keep_graph = keep_graph

    def update(self, chunk: Tensor) -> None:
        if not self.keep_graph:
            chunk = chunk.detach()
        c = int(chunk.shape[0])
        if c == 0:
            return
        mean_b = chunk.mean(dim=0)
        sq_b = (chunk * chunk).mean(dim=0) if self.track_square else None
        m2_b = ((chunk - mean_b) ** 2).sum(dim=0) if self.track_variance else None
        if self.mean is None:
            self.count, self.mean, self.sq, self.m2 = c, mean_b, sq_b, m2_b
            return
        n = self.count + c
        delta = mean_b - self.mean
        if self.m2 is not None and m2_b is not None:
            self.m2 = self.m2 + m2_b + delta * delta * (self.count * c / n)
        if self.sq is not None and sq_b is not None:
            self.sq = self.sq + (sq_b - self.sq) * (c / n)
        self.mean = self.mean + delta * (c / n)
        self.count = n

    def result(self, aggregate: str) -> Tensor:
        """``"mean"``, ``"mean_square"`` or ``"variance"`` (unbiased; 0 for one sample).

        Raises:
            WrapgradValueError: no samples yet, or an aggregate that was not tracked.
        """
        aggregate = check_aggregate(aggregate)
        if self.mean is None:
            raise WrapgradValueError("RunningMoments: no samples were added")
        if aggregate == "mean":
            return self.mean
        if aggregate == "mean_square":
            if self.sq is None:
                raise WrapgradValueError(
                    "aggregate: 'mean_square' was not tracked; build "
                    "RunningMoments(track_square=True)"
                )
            return self.sq
        if self.m2 is None:
            raise WrapgradValueError(
                "aggregate: 'variance' was not tracked; build RunningMoments(track_variance=True)"
            )
        if self.count < 2:
            return torch.zeros_like(self.m2)
        return self.m2 / (self.count - 1)


@attrs.frozen
class MonteCarloResult:
    """What an estimate returns when its samples were asked for (``return_samples=True``)."""

    attributions: Any
    """The aggregate, shaped like the explainer's output (a tuple for tuple inputs)."""
    samples: Any
    """The per-sample maps, shape ``(S, B, ...)`` per part; sample ``k · N + j`` is input
    sample ``j`` of weight sample ``k``."""


def flatten_output(out: Any, rows: int, name: str) -> tuple[list[Tensor], Callable[..., Any]]:
    """The explainer's output as a list of batch-first tensors, and how to rebuild it."""
    if isinstance(out, Tensor):
        parts, rebuild = [out], lambda xs: xs[0]
    elif isinstance(out, (tuple, list)) and out and all(isinstance(t, Tensor) for t in out):
        kind = type(out)
        parts, rebuild = list(out), lambda xs: kind(xs)
    else:
        raise WrapgradTypeError(
            f"enhancer: {name} returned {type(out).__name__}; an enhancer aggregates tensors "
            f"(or tuples of tensors) only (return_convergence_delta is not supported)"
        )
    for t in parts:
        if t.dim() == 0 or t.shape[0] != rows:
            raise WrapgradValueError(
                f"enhancer: {name} returned a map of shape {tuple(t.shape)} for a batch of "
                f"{rows} rows; the enhancer cannot apply to a method whose output is not batch "
                f"first"
            )
    return parts, rebuild


@attrs.define(eq=False)
class Reduction:
    """Reduces the chunks of one estimate, part by part, as they stream.

    ``add(parts, c)`` takes the explainer's output for ``c`` samples of a batch of ``B`` (each
    part ``(c · B, ...)``, sample-major); :meth:`result` returns the aggregate, or a
    :class:`MonteCarloResult` when samples are kept.

    Args:
        aggregate: one of :data:`~wrapgrad.engine.config.AGGREGATES`.
        batch: ``B``.
        abs_per_sample: reduce ``|E_s|`` (the absolute value of each draw).
        keep_graph: keep the autograd graph (differentiable maps).
        keep_samples: keep every sample (``return_samples``).
    """

    aggregate: str
    batch: int
    abs_per_sample: bool = attrs.field(default=False, kw_only=True)
    keep_graph: bool = attrs.field(default=False, kw_only=True)
    keep_samples: bool = attrs.field(default=False, kw_only=True)
    moments: list[RunningMoments] = attrs.field(factory=list, init=False, repr=False)
    kept: list[list[Tensor]] = attrs.field(factory=list, init=False, repr=False)
    rebuild: Callable[..., Any] | None = attrs.field(default=None, init=False, repr=False)

    def add(self, parts: list[Tensor], c: int, rebuild: Callable[..., Any]) -> None:
        if not self.moments:
            self.rebuild = rebuild
            self.moments = [
                RunningMoments(
                    track_square=self.aggregate == "mean_square",
                    track_variance=self.aggregate == "variance",
                    keep_graph=self.keep_graph,
                )
                for _ in parts
            ]
        shaped = [self._prepare(p).reshape(c, self.batch, *p.shape[1:]) for p in parts]
        for m, p in zip(self.moments, shaped, strict=True):
            m.update(p)
        if self.keep_samples:
            self.kept.append(shaped)

    def _prepare(self, p: Tensor) -> Tensor:
        if not self.keep_graph:
            p = p.detach()
        return p.abs() if self.abs_per_sample else p

    def result(self) -> Any:
        if self.rebuild is None:
            raise WrapgradValueError("Reduction: no samples were added")
        out = self.rebuild([m.result(self.aggregate) for m in self.moments])
        if not self.keep_samples:
            return out
        samples = self.rebuild(
            [torch.cat([chunk[i] for chunk in self.kept]) for i in range(len(self.moments))]
        )
        return MonteCarloResult(out, samples)
