"""Guide maps for attribution-shaped SDE noise: normalisation and carrying to a block's shape.

Jha et al. (2022) shape the diffusion of a neural SDE by the model's own attributions,
``Σ_next = Σ · Â(x)``, where ``Â`` is the attribution map ``A(x)`` "with the outliers dropped and
normalised between -1 and 1". The paper leaves the outlier rule and the way the input-sized map
reaches blocks of other shapes open; wrapgrad's choices, in three pure kernels:

1. :func:`normalise_attribution`: per example, values beyond the ``q_lo`` / ``q_hi`` quantiles
   (default the 1st and 99th percentiles) are clipped to them (winsorised: an outlier keeps its
   sign and becomes as important as the 99th-percentile value, instead of setting the scale for
   all others), then the map is divided by the largest magnitude left, ``max(|lo|, |hi|)``, so
   ``Â ∈ [-1, 1]`` with 0 kept at 0 and the extreme reaching ±1. A map that is zero everywhere
   stays zero.
2. :func:`guide_magnitude`: ``|Â|`` averaged over the channels, shape ``(B, 1, *spatial)``.
   Only the magnitude matters: the Brownian increment ``dB`` is symmetric, so ``Σ Â dB`` and
   ``Σ |Â| dB`` have the same law.
3. :func:`carry_to`: that magnitude average-pooled (adaptive average pooling) to a block's
   spatial size and broadcast over its channels: each block-level location gets the mean
   importance of the input region it summarises.

References:
    Jha, Ewetz, Velasquez, Ramanathan, Jha (2022), *Shaping Noise for Robust Attributions in
    Neural Stochastic Differential Equations*, AAAI, section "Training Neural SDEs With
    Attribution-based Noise".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from wrapgrad.checks import check_finite, check_in_range
from wrapgrad.errors import WrapgradTypeError, WrapgradValueError

__all__ = [
    "DEFAULT_QUANTILES",
    "carry_to",
    "check_quantiles",
    "guide_magnitude",
    "normalise_attribution",
    "row_quantiles",
]

#: The outlier rule's default: clip below the 1st and above the 99th percentile of each map.
DEFAULT_QUANTILES = (0.01, 0.99)

_POOLS = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


def check_quantiles(quantiles: object, argument: str = "quantiles") -> tuple[float, float]:
    """``(q_lo, q_hi)`` with ``0 <= q_lo < q_hi <= 1``; ``(0, 1)`` clips nothing."""
    if not isinstance(quantiles, (tuple, list)) or len(quantiles) != 2:
        raise WrapgradValueError(
            f"{argument}: expected (q_lo, q_hi) with 0 <= q_lo < q_hi <= 1, got {quantiles!r}"
        )
    lo = check_in_range(quantiles[0], f"{argument}[0]", 0.0, 1.0)
    hi = check_in_range(quantiles[1], f"{argument}[1]", 0.0, 1.0)
    if not lo < hi:
        raise WrapgradValueError(f"{argument}: expected q_lo < q_hi, got ({lo}, {hi})")
    return lo, hi


def row_quantiles(flat: Tensor, qs: Sequence[float]) -> Tensor:
    """Quantiles of each row of ``flat`` ``(B, N)``: shape ``(len(qs), B)``.

    Linear interpolation between order statistics at position ``q (N - 1)`` (NumPy's and
    ``torch.quantile``'s default), computed by one sort, so it has no size limit.
    """
    n = flat.shape[1]
    ordered = flat.sort(dim=1).values
    out = []
    for q in qs:
        pos = q * (n - 1)
        below = int(pos)
        above = min(below + 1, n - 1)
        frac = pos - below
        lower = ordered[:, below]
        out.append(lower + (ordered[:, above] - lower) * frac if frac else lower)
    return torch.stack(out)


def normalise_attribution(maps: Tensor, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> Tensor:
    """The unit-normalised attribution ``Â`` of each example (Jha et al. 2022).

    .. math:: l, h = Q_{q_{lo}}(A), Q_{q_{hi}}(A), \\qquad
              \\hat A = \\frac{\\operatorname{clip}(A, l, h)}{\\max(|l|, |h|)} \\in [-1, 1]

    per example (quantiles over all of that example's values), and ``Â = 0`` where
    ``max(|l|, |h|) = 0``.

    Args:
        maps: attributions ``(B, ...)`` (finite).
        quantiles: ``(q_lo, q_hi)``, default the 1st and 99th percentiles; ``(0, 1)`` clips
            nothing (plain division by the largest magnitude).

    Returns:
        ``Â``, the shape and dtype of ``maps``.
    """
    lo_q, hi_q = check_quantiles(quantiles)
    if not isinstance(maps, Tensor) or maps.dim() < 2 or not maps.is_floating_point():
        raise WrapgradTypeError(
            "maps: expected a floating-point tensor (B, ...) of attributions, got "
            + (
                f"shape {tuple(maps.shape)} dtype {maps.dtype}"
                if isinstance(maps, Tensor)
                else type(maps).__name__
            )
        )
    check_finite(maps, "maps")
    flat = maps.detach().reshape(maps.shape[0], -1)
    lo, hi = row_quantiles(flat, (lo_q, hi_q))
    clipped = torch.maximum(torch.minimum(flat, hi[:, None]), lo[:, None])
    scale = torch.maximum(lo.abs(), hi.abs())[:, None]
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    out = torch.where(scale > 0, clipped / safe, torch.zeros_like(clipped))
    return out.reshape(maps.shape)


def guide_magnitude(normalised: Tensor) -> Tensor:
    """``|Â|`` averaged over the channel axis: ``(B, C, *spatial) -> (B, 1, *spatial)``.

    A map without spatial axes, ``(B, D)`` (a vector state), is returned as ``|Â|``.
    """
    mag = normalised.abs()
    return mag if mag.dim() == 2 else mag.mean(dim=1, keepdim=True)


def carry_to(guide: Tensor, shape: Sequence[int], argument: str = "guide") -> Tensor:
    """Carry a guide magnitude ``(B, c, *spatial)`` to a state of ``shape`` ``(b, C, *spatial')``.

    * the same spatial size: returned as it is (``c = 1`` broadcasts over the ``C`` channels);
    * another spatial size (a block after a stride): adaptive average pooling to it (1-, 2- or
      3-D), so each state location gets the mean guide over the input region it covers;
    * vector states ``(b, D)``: the guide must be ``(B, D)``.

    The batch axis is left alone (``b`` may be 1: one draw shared by the batch broadcasts).
    """
    shape = tuple(int(s) for s in shape)
    if guide.dim() != len(shape):
        raise WrapgradValueError(
            f"{argument}: cannot carry a guide of shape {tuple(guide.shape)} to a state of shape "
            f"{shape}: expected the same number of dimensions"
        )
    if guide.dim() == 2:
        if guide.shape[1] != shape[1]:
            raise WrapgradValueError(
                f"{argument}: a vector state of shape {shape} needs a guide (B, {shape[1]}), got "
                f"{tuple(guide.shape)}"
            )
        return guide
    if guide.shape[1] not in (1, shape[1]):
        raise WrapgradValueError(
            f"{argument}: expected a guide with 1 or {shape[1]} channels for a state of shape "
            f"{shape}, got {tuple(guide.shape)}"
        )
    spatial = shape[2:]
    if tuple(guide.shape[2:]) == spatial:
        return guide
    pool = _POOLS.get(len(spatial))
    if pool is None:
        raise WrapgradValueError(
            f"{argument}: cannot pool a guide of shape {tuple(guide.shape)} to {shape}: only 1-, "
            f"2- and 3-D spatial states are supported"
        )
    return pool(guide, spatial)
