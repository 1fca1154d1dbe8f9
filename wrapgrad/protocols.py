"""The protocols every component follows (structural: no base class to inherit).

Shapes: ``B`` is the batch size; attributions have the shape of the inputs they explain (a tuple
for tuple inputs), except layer methods, which return what the layer has.
``TensorOrTuple = Tensor | tuple[Tensor, ...]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = [
    "Attack",
    "Enhancer",
    "Explainer",
    "InputPerturber",
    "LabelledDataset",
    "Metric",
    "Objective",
    "Perturber",
    "StatePerturber",
    "TensorOrTuple",
    "WeightPerturber",
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

    Any plain function with that signature is an Explainer. What it can do (run under ``vmap``,
    needs input gradients, draws random numbers, ...) it may declare in an optional ``traits``
    attribute, an :class:`~wrapgrad.records.ExplainerTraits`; without one the engine assumes the
    conservative defaults (see :func:`~wrapgrad.records.traits_of`).
    """

    def __call__(
        self, model: Callable[..., Tensor], inputs: TensorOrTuple, target: Any = None, **kwargs: Any
    ) -> TensorOrTuple: ...


@runtime_checkable
class Perturber(Protocol):
    """A noise source: what the three perturber protocols below share. ``target`` says which one
    it follows: ``"input"`` (:class:`InputPerturber`), ``"weight"`` (:class:`WeightPerturber`) or
    ``"state"`` (:class:`StatePerturber`)."""

    target: str


@runtime_checkable
class InputPerturber(Protocol):
    """Noise on the inputs, e.g. ``x + ξ`` (SmoothGrad; Bykov et al. 2022, Eq. 4 for σ relative
    to each sample's range). Exactly what the engine calls:

    * ``target == "input"``;
    * ``is_zero``: True when the noise is off (the engine then skips it);
    * ``sample(x, n, *, generator)``: ``n`` perturbed copies of the batch ``x`` ``(B, ...)``,
      stacked, shape ``(n, *x.shape)``, drawn from ``generator`` only (same state, same draws).
      The engine calls it with ``n = 1`` and one generator per Monte-Carlo sample.
    """

    target: str
    is_zero: bool

    def sample(self, x: Tensor, n: int, *, generator: torch.Generator | None = None) -> Tensor: ...


@runtime_checkable
class WeightPerturber(Protocol):
    """Noise on parameters, e.g. ``W ⊙ η``, η ~ N(1, σ²) (NoiseGrad; Bykov et al. 2022, Eq. 1).
    Exactly what the engine calls:

    * ``target == "weight"``;
    * ``is_zero``: True when the noise is off;
    * ``parameter_names(model)``: the qualified names of the parameters to perturb (an error
      naming the option if a selection matches nothing);
    * ``sample(w, n, *, generator)``: ``n`` samples of one parameter tensor ``w``, shape
      ``(n, *w.shape)``, drawn from ``generator`` only; ``w`` itself is never changed. The
      engine calls it once per selected parameter and Monte-Carlo weight sample, with ``n = 1``.
    """

    target: str
    is_zero: bool

    def parameter_names(self, model: nn.Module) -> list[str]: ...

    def sample(self, w: Tensor, n: int, *, generator: torch.Generator | None = None) -> Tensor: ...


@runtime_checkable
class StatePerturber(Protocol):
    """Noise injected into a hidden state: one Euler-Maruyama increment ``Σ √dt ξ`` of a neural
    SDE ``dx = G(x) dt + Σ dB_t`` (Jha et al. 2022), optionally shaped by a guide attribution.
    What a stochastic block (:mod:`wrapgrad.sde`) calls:

    * ``target == "state"``;
    * ``is_zero``: True when Σ = 0 (the block is then the deterministic residual block);
    * ``increment(state, dt, *, generator, guide=None)``: ``Σ(guide) √dt ξ`` with ξ ~ N(0, I) of
      ``state``'s shape drawn from ``generator`` only (same state, same draws); ``state`` is the
      block's deterministic output. A one-row ``state`` asks for one draw that the caller
      broadcasts over its batch (Monte-Carlo inference); the result may then have the guide's
      batch size.
    * optional ``needs_guide`` (default False): True if the model should supply ``guide``;
    * optional ``prepare_guide(maps) -> Tensor``: turns raw per-example maps of the inputs'
      shape ``(B, ...)`` into the form ``increment`` takes (normalised, reduced); the model calls
      it once per map when maps are set or computed, and stores the result. ``increment`` then
      carries it to ``state``'s shape (e.g. pooling to the block's resolution). Without a guide
      (``None``) Σ is constant.
    """

    target: str
    is_zero: bool

    def increment(
        self,
        state: Tensor,
        dt: float,
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
    """A score per sample. The call form is declared by the metric's spec (``requires``):

    * map-to-map (``"maps"``): ``metric(a, b) -> Tensor[B]``, e.g. top-k intersection of the maps
      before and after an attack;
    * model-based (``"model"``): ``metric(model, inputs, target, explain) -> Tensor[B]``, where
      ``explain`` is what :func:`wrapgrad.wrap` returns (e.g. the sensitivity S_r);
    * mask-based (``"mask"``): ``metric(attributions, mask) -> Tensor[B]`` (localisation);
    * mosaic (``"mosaic"``): ``metric(model, mosaics, target, explain, positions) -> Tensor[B]``,
      each input a 2x2 mosaic of images and ``positions`` ``(B, 4)`` the 0/1 flags of the tiles
      that show the target class (Focus).

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


@runtime_checkable
class LabelledDataset(Protocol):
    """What a registered data set's factory returns (:func:`wrapgrad.load_dataset`): ``N``
    labelled inputs held in memory, read by pipelines, the training commands and calibration.
    :class:`wrapgrad.datasets.InMemoryDataset` implements it; any object with these attributes
    does too (a torch ``Dataset``, so a ``DataLoader`` can batch it).

    Attributes:
        inputs: float tensor ``(N, ...)``; ``data[i]`` is ``(inputs[i], labels[i])``.
        labels: int64 tensor ``(N,)`` in ``[0, num_classes)``.
        masks: ground-truth masks by name, each a bool tensor with ``N`` rows (the names the
            spec's ``masks`` declares; empty without masks).
        num_classes: the number of classes.
        name: the registered name.
    """

    inputs: Tensor
    labels: Tensor
    masks: Mapping[str, Tensor]
    num_classes: int
    name: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: Any) -> tuple[Tensor, Tensor]: ...

    def tensors(self) -> tuple[Tensor, Tensor]:
        """``(inputs, labels)``: the whole set (what :func:`wrapgrad.calibrate` takes)."""
        ...
