"""The protocols every component follows (structural: no base class to inherit).

Shapes: ``B`` is the batch size; attributions have the shape of the inputs they explain (a tuple
for tuple inputs), except layer methods, which return what the layer has.
``TensorOrTuple = Tensor | tuple[Tensor, ...]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = [
    "Attack",
    "Enhancer",
    "Explainer",
    "Metric",
    "Objective",
    "Perturber",
    "TensorOrTuple",
]

TensorOrTuple = Tensor | tuple[Tensor, ...]


@runtime_checkable
class Explainer(Protocol):
    """An attribution method bound to no particular model.

    ``explainer(model, inputs, target=None, **kwargs)`` explains ``model``'s output for ``inputs``
    (shape ``(B, ...)``, or a tuple of such tensors for a multi-input model) with respect to
    ``target`` (Captum's target forms: ``None``, an int, a tuple, a tensor or list of ``B``
    indices) and returns attributions of the inputs' shape on the inputs' device (layer methods:
    the layer's shape). ``model`` is any callable module; enhancers pass a functional view of the
    user's model with perturbed weights, so an explainer must not hold on to a model of its own.

    Any plain function with that signature is an Explainer. Optional attributes an engine reads:
    ``uses_hooks`` (bool: relies on module hooks, so it cannot be ``vmap``-ed) and ``family``
    (``"attribution"``, ``"layer"`` or ``"neuron"``).
    """

    def __call__(
        self, model: Callable[..., Tensor], inputs: TensorOrTuple, target: Any = None, **kwargs: Any
    ) -> TensorOrTuple: ...


@runtime_checkable
class Perturber(Protocol):
    """A noise source. One protocol covers the three kinds of noise of the papers:

    * ``target == "input"``: additive noise on the inputs, ``x + ξ`` (SmoothGrad, Bykov et al.
      2022 Eq. 1; σ relative to each sample's range, Eq. 4);
    * ``target == "weight"``: multiplicative noise on parameters, ``W ⊙ η``, η ~ N(1, σ²)
      (NoiseGrad, Bykov et al. 2022 Eq. 2);
    * ``target == "state"``: noise injected into a hidden state, optionally shaped by a guide
      attribution (attribution-shaped neural SDEs, Jha et al. 2022).

    ``sample(value, n, generator=g, guide=None)`` returns ``n`` perturbed copies of ``value``
    stacked on a new leading axis, shape ``(n, *value.shape)``, drawn from ``g`` only (same
    generator state, same draws). ``guide``, where given, has ``value``'s shape (or broadcasts to
    it) and scales the noise element-wise. ``sigma == 0`` returns exact copies.
    """

    target: str

    def sample(
        self,
        value: Tensor,
        n: int,
        *,
        generator: torch.Generator | None = None,
        guide: Tensor | None = None,
    ) -> Tensor: ...


@runtime_checkable
class Enhancer(Protocol):
    """Turns an explainer into a less noisy one (SmoothGrad, NoiseGrad, FusionGrad, VarGrad).

    ``enhancer(explainer, model, inputs, target=None, **kwargs)`` returns attributions of the
    explainer's output shape: an aggregate (mean, mean of squares, variance) over Monte-Carlo
    samples of perturbed inputs and/or perturbed models. It never mutates ``model``.
    """

    def __call__(
        self,
        explainer: Explainer,
        model: nn.Module,
        inputs: TensorOrTuple,
        target: Any = None,
        **kwargs: Any,
    ) -> TensorOrTuple: ...


@runtime_checkable
class Metric(Protocol):
    """A score per sample. Two call forms, declared by the metric's spec (``requires``):

    * map-to-map (``"maps"``): ``metric(a, b) -> Tensor[B]``, e.g. top-k intersection of the maps
      before and after an attack;
    * model-based (``"model"``): ``metric(model, inputs, target, explain) -> Tensor[B]``, where
      ``explain`` is what :func:`wrapgrad.wrap` returns (e.g. the sensitivity S_r);
    * mask-based (``"mask"``): ``metric(attributions, mask) -> Tensor[B]`` (localisation).

    ``higher_is_better`` says the direction of the score.
    """

    higher_is_better: bool | None

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor: ...


@runtime_checkable
class Attack(Protocol):
    """An attribution attack: ``attack(model, inputs, target, explain)`` returns a record whose
    ``inputs`` are the perturbed inputs (inside the attack's ball, prediction kept), with the maps
    and scores before and after."""

    def __call__(
        self, model: nn.Module, inputs: Tensor, target: Any, explain: Callable[..., Any]
    ) -> Any: ...


@runtime_checkable
class Objective(Protocol):
    """A training objective: ``objective(model, inputs, target, generator=None)`` returns the
    scalar loss to minimise for one batch (natural cross-entropy, PGD adversarial training,
    IG-NORM, AAT, ...). It may run the model on perturbed inputs or with perturbed weights, but
    changes no parameter itself: the training loop owns the optimiser step.
    ``metrics`` (optional) maps names to the last batch's auxiliary values."""

    def __call__(
        self,
        model: nn.Module,
        inputs: Tensor,
        target: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor: ...
