"""Map-to-map and mask-based metrics as thin classes over :mod:`wrapgrad_metrics.functional`.

``metric(a, b) -> Tensor[B]`` compares two batches of maps (e.g. before and after an attack);
``metric(attributions, mask) -> Tensor[B]`` scores maps against ground-truth masks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from wrapgrad.checks import check_map
from wrapgrad.errors import WrapgradTypeError, WrapgradValueError
from wrapgrad_metrics import functional as fn

__all__ = ["KendallTau", "LocalisationAUC", "SpearmanRho", "TopKIntersection"]


def _check_reduction(channel_reduction: str | None) -> str | None:
    if channel_reduction not in fn.CHANNEL_REDUCTIONS:
        raise WrapgradValueError(
            f"channel_reduction: expected one of {fn.CHANNEL_REDUCTIONS}, got {channel_reduction!r}"
        )
    return channel_reduction


class _PairMetric:
    higher_is_better: bool | None = True

    def __init__(
        self, *, channel_reduction: str | None = None, channel_dim: int = 1, abs: bool = False
    ) -> None:
        self.channel_reduction = _check_reduction(channel_reduction)
        self.channel_dim = channel_dim
        self.abs = bool(abs)

    def _options(self) -> dict[str, Any]:
        return {
            "channel_reduction": self.channel_reduction,
            "channel_dim": self.channel_dim,
            "abs": self.abs,
        }

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self._options().items())
        return f"{type(self).__name__}({opts})"


class TopKIntersection(_PairMetric):
    """Top-k intersection (IN): the fraction of the ``k`` most important features of the first
    map that stay among the ``k`` most important of the second (Ghorbani et al. 2019; FAR Sec.
    3). Importance is magnitude by default (``abs=True``). See
    :func:`~wrapgrad_metrics.functional.topk_intersection`.

    Args:
        k: an int count of features, or a float fraction of them in ``(0, 1]``.
        channel_reduction, channel_dim: see :func:`~wrapgrad_metrics.functional.reduce_channels`.
        abs: rank by magnitude (default) or by signed value.

    ``wrapgrad.metric("topk_intersection", k=0.1)`` keeps the top 10 % of the features.

    >>> before = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    >>> after = torch.tensor([[4.0, 1.0, 3.0, 2.0]])
    >>> TopKIntersection(k=2)(before, after)  # top-2 {0, 1} against {0, 2}
    tensor([0.5000], dtype=torch.float64)
    """

    def __init__(
        self,
        k: int | float = 50,
        *,
        channel_reduction: str | None = None,
        channel_dim: int = 1,
        abs: bool = True,
    ) -> None:
        super().__init__(channel_reduction=channel_reduction, channel_dim=channel_dim, abs=abs)
        if isinstance(k, bool) or not isinstance(k, (int, float)):
            raise WrapgradTypeError(
                f"k: expected an int count or a float fraction in (0, 1], got {type(k).__name__}"
            )
        if (isinstance(k, int) and k < 1) or (isinstance(k, float) and not 0.0 < k <= 1.0):
            raise WrapgradValueError(
                f"k: expected a positive int count or a float fraction in (0, 1], got {k!r}"
            )
        self.k = k

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        return fn.topk_intersection(a, b, self.k, **self._options())

    def __repr__(self) -> str:
        return super().__repr__().replace("(", f"(k={self.k}, ", 1)


class KendallTau(_PairMetric):
    """Kendall's tau-b between two maps (CO in FAR), as ``scipy.stats.kendalltau``.
    See :func:`~wrapgrad_metrics.functional.kendall_tau`."""

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        return fn.kendall_tau(a, b, **self._options())


class SpearmanRho(_PairMetric):
    """Spearman's rho between two maps (average ranks), as ``scipy.stats.spearmanr``.
    See :func:`~wrapgrad_metrics.functional.spearman_rho`."""

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        return fn.spearman_rho(a, b, **self._options())


class LocalisationAUC:
    """ROC-AUC of a map against a ground-truth foreground mask (Jha et al. 2022, "consistency
    with weakly supervised localization": ``TPR = |R ∩ G_F| / |G_F|``, ``FPR = |R ∩ G_B| / |G_B|`` over
    all thresholds R of the map), i.e. the Mann-Whitney statistic (ties count one half).

    The map is reduced over channels (default: sum of magnitudes) where the mask has no channel
    axis. ``mask`` has the map's shape, its spatial shape ``(B, H, W)``, Quantus' ``(B, 1, H, W)``,
    or ``(H, W)`` for all samples.

    Args:
        channel_reduction: how image maps lose their channel axis.
        abs: rank pixels by magnitude.
    """

    higher_is_better = True

    def __init__(self, *, channel_reduction: str | None = "sum_abs", abs: bool = True) -> None:
        self.channel_reduction = _check_reduction(channel_reduction)
        self.abs = bool(abs)

    def __call__(self, attributions: Tensor, mask: Tensor) -> Tensor:
        attributions = check_map(attributions)
        if not isinstance(mask, Tensor):
            raise WrapgradTypeError(f"mask: expected a boolean tensor, got {type(mask).__name__}")
        a = attributions.detach()
        shape = tuple(a.shape)
        m = mask.to(a.device)
        if tuple(m.shape) != shape:
            if a.dim() >= 3 and self.channel_reduction is not None:
                a = fn.reduce_channels(a, self.channel_reduction)
            spatial = tuple(a.shape)
            if m.dim() == len(spatial) + 1 and m.shape[1] == 1:  # Quantus' (B, 1, H, W) masks
                m = m.squeeze(1)
            if tuple(m.shape) == spatial[1:]:
                m = m.expand(spatial)
            elif tuple(m.shape) != spatial:
                raise WrapgradValueError(
                    f"mask: expected the shape of the attributions {shape}, their spatial shape "
                    f"{spatial} or {spatial[1:]}, got {tuple(m.shape)}"
                )
        if m.dtype != torch.bool:
            values = torch.unique(m)
            if not bool(((values == 0) | (values == 1)).all()):
                raise WrapgradValueError(
                    f"mask: expected a boolean (or 0/1) mask, got values {values[:5].tolist()}"
                )
            m = m.to(torch.bool)
        scores = a.reshape(a.shape[0], -1).to(torch.float64)
        if self.abs:
            scores = scores.abs()
        return fn.roc_auc(scores, m.reshape(m.shape[0], -1))

    def __repr__(self) -> str:
        return f"LocalisationAUC(channel_reduction={self.channel_reduction!r}, abs={self.abs})"
