"""Attribution dissimilarities ``d_s(a, b)`` of FAR Eqs. 5-6, one value per sample.

* ``l1``: :math:`\\|a - b\\|_1` (IG-NORM and IG-SUM-NORM, FAR Eq. 8, with ``b = 0``);
* ``pcl``: the Pearson correlation loss :math:`1 - (\\mathrm{PCC}(a, b) + 1)/2` (FAR Eqs. 10-11);
* ``cosine``: :math:`1 - \\cos(a, b)`;
* ``topk`` (for inner maximisations only): the mass of the normalised importance
  :math:`I(a) = |a| / \\sum |a|` (magnitudes summed over channels) outside the ``k`` most
  important features of ``b``, :math:`1 - \\sum_{i \\in \\mathrm{top}_k I(b)} I(a)_i`: Ghorbani et
  al.'s top-k objective, the Sum-Top-K ``d_s`` of FAR's IFIA (Table 2), shifted into [0, 1].

Maps are flattened per sample; everything is differentiable in ``a`` (and in ``b`` except
``topk``, whose feature set is fixed by ``b``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from wrapgrad.errors import WrapgradTypeError, WrapgradValueError

__all__ = ["DISSIMILARITIES", "dissimilarity", "resolve_k", "topk_dissimilarity"]

#: The ``d_s`` an objective's loss may use.
DISSIMILARITIES = ("l1", "pcl", "cosine")

_EPS = 1e-12


def _flat(maps: Tensor) -> Tensor:
    return maps.reshape(maps.shape[0], -1)


def dissimilarity(name: str, a: Tensor, b: Tensor) -> Tensor:
    """``d_s(a, b)`` per sample, shape ``(B,)``, for ``name`` in :data:`DISSIMILARITIES`."""
    fa, fb = _flat(a), _flat(b).to(a.dtype)
    if name == "l1":
        return (fa - fb).abs().sum(dim=1)
    if name == "cosine":
        cos = (fa * fb).sum(dim=1) / (fa.norm(dim=1) * fb.norm(dim=1)).clamp_min(_EPS)
        return 1 - cos
    if name == "pcl":
        ca = fa - fa.mean(dim=1, keepdim=True)
        cb = fb - fb.mean(dim=1, keepdim=True)
        pcc = (ca * cb).sum(dim=1) / (ca.norm(dim=1) * cb.norm(dim=1)).clamp_min(_EPS)
        return 1 - (pcc + 1) / 2
    raise WrapgradValueError(f"dissimilarity: expected one of {DISSIMILARITIES}, got {name!r}")


def importance(maps: Tensor) -> Tensor:
    """Ghorbani's normalised importance ``(B, N)``: magnitudes (summed over the channel axis of
    image maps ``(B, C, H, W)``), divided by their sum per sample."""
    imp = maps.abs().sum(dim=1) if maps.dim() >= 4 else maps.abs()
    flat = _flat(imp)
    return flat / flat.sum(dim=1, keepdim=True).clamp_min(torch.finfo(flat.dtype).tiny)


def resolve_k(k: int | float, n: int) -> int:
    """``k`` as a feature count: an int ``1 <= k`` (capped at ``n``) or a fraction in (0, 1]."""
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise WrapgradTypeError(f"k: expected an int count or a float fraction, got {k!r}")
    if isinstance(k, float):
        if not 0.0 < k <= 1.0:
            raise WrapgradValueError(f"k: expected a fraction in (0, 1] or an int count, got {k}")
        return max(1, min(n, math.ceil(k * n - 1e-9)))
    if k < 1:
        raise WrapgradValueError(f"k: expected an int count >= 1 or a float fraction, got {k}")
    return min(int(k), n)


def topk_dissimilarity(a: Tensor, b: Tensor, k: int | float) -> Tensor:
    """``1 - (mass of I(a) on the top-k features of I(b))`` per sample (module docstring)."""
    ia, ib = importance(a), importance(b.detach())
    kk = resolve_k(k, ia.shape[1])
    top = torch.zeros_like(ib, dtype=torch.bool)
    top.scatter_(1, torch.sort(ib, dim=1, descending=True, stable=True).indices[:, :kk], True)
    return 1 - (ia * top.to(ia.dtype)).sum(dim=1)
