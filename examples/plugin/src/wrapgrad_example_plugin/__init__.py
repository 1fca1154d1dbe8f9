"""An example third-party wrapgrad plugin.

It contributes

* the map-to-map metric ``cosine_similarity``: per-sample cosine similarity of two attribution maps,
  ``<a, b> / (||a|| ||b||)`` (1 for maps that agree up to scale);
* the explainer ``gradient_x_sign``: the gradient times the sign of the input,
  ``∂f_t/∂x ⊙ sign(x)`` (Gradient × Sign, Gu, Yang & Tresp 2018), a callable Explainer.

After ``pip install`` it is available as ``wrapgrad.metric("cosine_similarity")`` and
``wrapgrad.wrap(model, "gradient_x_sign")``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from wrapgrad import hookimpl
from wrapgrad.records import ExplainerSpec, MetricSpec


class CosineSimilarity:
    """Per-sample cosine similarity of two maps of the same shape ``(B, ...)``."""

    higher_is_better = True

    def __init__(self, eps: float = 1e-12) -> None:
        self.eps = eps

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape:
            raise ValueError(f"b: expected the shape of a {tuple(a.shape)}, got {tuple(b.shape)}")
        a, b = a.flatten(1).double(), b.flatten(1).double()
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(self.eps)


class GradientXSign:
    """``explainer(model, inputs, target)``: ∂f_target/∂x ⊙ sign(x)."""

    family = "attribution"
    uses_hooks = False
    requires_grad_inputs = True
    stochastic = False
    name = "gradient_x_sign"

    def __call__(
        self, model: Any, inputs: torch.Tensor, target: Any = None, **kw: Any
    ) -> torch.Tensor:
        x = inputs.detach().requires_grad_(True)
        with torch.enable_grad():
            out = model(x)
            if target is not None:
                index = torch.as_tensor(target, device=out.device).reshape(-1, 1)
                out = out.gather(1, index.expand(out.shape[0], 1))
            (grad,) = torch.autograd.grad(out.sum(), x)
        return grad * torch.sign(inputs)


@hookimpl
def wrapgrad_metrics() -> Iterator[MetricSpec]:
    yield MetricSpec(
        name="cosine_similarity",
        factory=CosineSimilarity,
        summary="Cosine similarity of two attribution maps, per sample",
        requires="maps",
        higher_is_better=True,
    )


@hookimpl
def wrapgrad_explainers() -> Iterator[ExplainerSpec]:
    yield ExplainerSpec(
        name="gradient_x_sign",
        factory=GradientXSign,
        summary="Gradient times the sign of the input (Gu et al. 2018)",
    )
