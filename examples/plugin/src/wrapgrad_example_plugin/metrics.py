"""Two metrics: cosine similarity of two maps, and relevance mass accuracy against a mask."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from wrapgrad.checks import check_map, check_positive
from wrapgrad.errors import WrapgradValueError

__all__ = ["CosineSimilarity", "RelevanceMass"]


class CosineSimilarity:
    """Per-sample cosine similarity of two maps of the same shape ``(B, ...)``:
    ``<a, b> / (||a|| ||b||)``, 1 for maps that agree up to a positive scale.

    >>> a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    >>> CosineSimilarity()(a, torch.tensor([[2.0, 0.0], [-1.0, 1.0]]))
    tensor([1., 0.], dtype=torch.float64)
    """

    higher_is_better = True

    def __init__(self, eps: float = 1e-12) -> None:
        self.eps = check_positive(eps, "eps")

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        if a.shape != b.shape:
            raise WrapgradValueError(
                f"b: expected the shape of a {tuple(a.shape)}, got {tuple(b.shape)}"
            )
        a, b = a.flatten(1).double(), b.flatten(1).double()
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(self.eps)


class RelevanceMass:
    """Relevance mass accuracy (Arras, Osman & Samek 2022, CLEVR-XAI): the share of the
    positive relevance that falls inside the ground-truth mask ``M``,

    .. math:: \\mathrm{RMA} = \\frac{\\sum_{i \\in M} R_i^+}{\\sum_i R_i^+},\\qquad R^+ = \\max(R, 0),

    per sample; channels are summed first when the mask has one channel. 1 when all positive
    relevance lies in the mask; 0 for a map with no positive relevance.

    >>> maps = torch.tensor([[[[3.0, 1.0], [-2.0, 0.0]]]])
    >>> mask = torch.tensor([[[[True, False], [True, False]]]])
    >>> RelevanceMass()(maps, mask)
    tensor([0.7500], dtype=torch.float64)
    """

    higher_is_better = True

    def __call__(self, attributions: Any, mask: Tensor) -> Tensor:
        r = check_map(attributions).detach().double()
        m = torch.as_tensor(mask, device=r.device).bool()
        if m.dim() == r.dim() and m.shape[1] == 1 and r.shape[1] != 1:
            r = r.sum(dim=1, keepdim=True)
        if m.shape != r.shape:
            raise WrapgradValueError(
                f"mask: expected the maps' shape {tuple(r.shape)} (or one channel), got {tuple(m.shape)}"
            )
        pos = r.clamp_min(0).flatten(1)
        inside = (pos * m.flatten(1)).sum(1)
        total = pos.sum(1)
        return torch.where(total > 0, inside / total.clamp_min(1e-300), torch.zeros_like(total))
