"""Gradient × Sign (Gu, Yang & Tresp 2018): ``∂f_t/∂x ⊙ sign(x)``, a callable Explainer."""

from __future__ import annotations

from typing import Any

import torch

from wrapgrad.differentiable import saliency
from wrapgrad.records import ExplainerTraits

__all__ = ["GradientXSign"]


class GradientXSign:
    """``explainer(model, inputs, target)``: the gradient of the target logit
    (:func:`wrapgrad.differentiable.saliency` without magnitudes) times the sign of the input. Differentiable (``create_graph=True`` keeps the graph) and gradient-only, so
    the engine may run it on stacked weight samples under ``vmap``."""

    traits = ExplainerTraits(
        name="gradient_x_sign", requires_grad_inputs=True, vmap_layout="block", differentiable=True
    )
    name = "gradient_x_sign"

    def __call__(
        self,
        model: Any,
        inputs: torch.Tensor,
        target: Any = None,
        *,
        create_graph: bool = False,
        **kw: Any,
    ) -> torch.Tensor:
        grad = saliency(model, inputs, target, abs=False, create_graph=create_graph)
        return grad * torch.sign(inputs.detach())
