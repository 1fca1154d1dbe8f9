"""Guide maps for attribution-shaped SDE noise: normalisation and carrying to a block's shape.

Jha et al. (2022) shape the diffusion of a neural SDE by the model's own attributions,
``Σ_next = Σ · Â(x)``, where ``Â`` is the attribution map ``A(x)`` "with the outliers dropped and
normalised between -1 and 1". The paper leaves the outlier rule and the way the input-sized map
reaches blocks of other shapes open; wrapgrad's choices, in three pure kernels:

1. :func:`normalise_attribution`: per example, magnitudes above the ``q``-quantile of ``|A|``
   (default the 99th percentile) are clipped to it, keeping their sign (winsorised: an outlier
   becomes as important as the 99th-percentile value instead of setting the scale for all
   others), and the map is divided by that quantile, so ``Â ∈ [-1, 1]``, the clipped extremes at
   ±1. The rule is on magnitudes because only ``|Â|`` reaches the noise (item 2): zero stays
   zero, no sign flips, no order changes, and a non-negative map (Saliency) is not raised at its
   low end as a two-sided 1st/99th-percentile clip would raise it. A map that is zero everywhere
   stays zero; a map with fewer than ``1 - q`` non-zero values (whose quantile is 0) is divided
   by its largest magnitude instead.
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
    "DEFAULT_OUTLIER_QUANTILE",
    "carry_to",
    "guide_magnitude",
    "normalise_attribution",
    "row_quantiles",
]

#: The outlier rule's default: clip magnitudes above the 99th percentile of each map's ``|A|``.
DEFAULT_OUTLIER_QUANTILE = 0.99

_POOLS = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


def row_quantiles(flat: Tensor, qs: Sequence[float]) -> Tensor:
    """Quantiles of each row of ``flat`` ``(B, N)``: shape ``(len(qs), B)``.

    Linear interpolation between order statistics at position ``q (N - 1)`` (NumPy's and
    ``torch.quantile``'s default), read from one ``topk`` of the largest ``N - ⌊q_min (N - 1)⌋``
    values of each row (the order statistics above the lowest position asked for; exact, and for
    the outlier rule's ``q = 0.99`` about ten times cheaper than sorting the row), so it has no
    size limit.
    """
    n = flat.shape[1]
    positions = [q * (n - 1) for q in qs]
    lowest = min(int(pos) for pos in positions)
    top = flat.topk(n - lowest, dim=1).values  # descending: the j-th smallest is top[:, n-1-j]
    out = []
    for pos in positions:
        below = int(pos)
        above = min(below + 1, n - 1)
        frac = pos - below
        lower = top[:, n - 1 - below]
        out.append(lower + (top[:, n - 1 - above] - lower) * frac if frac else lower)
    return torch.stack(out)


def normalise_attribution(
    maps: Tensor, outlier_quantile: float = DEFAULT_OUTLIER_QUANTILE
) -> Tensor:
    """The unit-normalised attribution ``Â`` of each example (Jha et al. 2022).

    .. math:: h = Q_q(|A|), \\qquad
              \\hat A = \\operatorname{sign}(A)\\,\\frac{\\min(|A|, h)}{h} \\in [-1, 1]

    per example (the quantile over all of that example's values), with ``h = max |A|`` where
    ``Q_q(|A|) = 0``, and ``Â = 0`` where ``A`` is zero everywhere.

    Args:
        maps: attributions ``(B, ...)`` (finite).
        outlier_quantile: ``q`` in (0, 1], default 0.99; 1 clips nothing (division by the
            largest magnitude).

    Returns:
        ``Â``, the shape and dtype of ``maps``.
    """
    q = check_in_range(outlier_quantile, "outlier_quantile", 0.0, 1.0, low_open=True)
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
    magnitude = flat.abs()
    (h,) = row_quantiles(magnitude, (q,))
    h = torch.where(h > 0, h, magnitude.amax(dim=1))[:, None]
    safe = torch.where(h > 0, h, torch.ones_like(h))
    out = torch.where(h > 0, flat.clamp(-safe, safe) / safe, torch.zeros_like(flat))
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
