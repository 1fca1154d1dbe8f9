"""Gradient × Sign (Gu, Yang & Tresp 2018): ``∂f_t/∂x ⊙ sign(x)``, a callable Explainer."""

from __future__ import annotations

from typing import Any

import torch

from wrapgrad.records import ExplainerTraits

__all__ = ["GradientXSign"]


class GradientXSign:
    """``explainer(model, inputs, target)``: the gradient of the target logit times the sign
    of the input. Differentiable (``create_graph=True`` keeps the graph) and gradient-only, so
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
        x = inputs if inputs.requires_grad else inputs.detach().requires_grad_(True)
        with torch.enable_grad():
            out = model(x)
            if target is not None:
                index = torch.as_tensor(target, device=out.device).reshape(-1, 1)
                out = out.gather(1, index.expand(out.shape[0], 1))
            (grad,) = torch.autograd.grad(out.sum(), x, create_graph=create_graph)
        return grad * torch.sign(inputs.detach())
