"""``wrapgrad.metric`` and ``wrapgrad.attack``: evaluation components by name, and attack records.

Example::

    import wrapgrad
    explain = wrapgrad.wrap(model, "saliency")
    ifia = wrapgrad.attack("ifia", objective="topk", epsilon=0.1, k=50, bounds=(0, 1))
    result = ifia(model, x, y, explain)
    result.metrics["topk_intersection"]          # IN per sample, after the attack

    spearman = wrapgrad.metric("spearman_rho")
    spearman(result.maps_before, result.maps_after)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch
from torch import Tensor

from wrapgrad.errors import UnknownNameError
from wrapgrad.registry import Registry, get_registry, use_registry

__all__ = ["AttackResult", "StrengthCurve", "attack", "attack_strength_curve", "metric"]


def metric(name: str, *, registry: Registry | None = None, **params: Any) -> Any:
    """Build the metric ``name`` with ``params``.

    Map-to-map metrics (``topk_intersection``, ``kendall_tau``, ``spearman_rho``) are called as
    ``m(a, b)``; model-based ones (``sensitivity``, ``deletion``, ``insertion``, ``sic``, ``aic``,
    ``captum_infidelity``, ``captum_sensitivity_max``) as ``m(model, inputs, target, explain)``;
    mask-based ones (``localisation_auc``) as ``m(attributions, mask)``; mosaic ones
    (``quantus_focus``) as ``m(model, mosaics, target, explain, positions)``. Each returns one
    score per sample. An unknown name or parameter raises
    :class:`~wrapgrad.errors.UnknownNameError` with the closest names; a name a plugin declares
    unavailable raises :class:`~wrapgrad.errors.UnavailableError` with the reason.
    """
    with use_registry(registry):
        return _build(get_registry().get("metric", name, argument="name"), params)


def attack(name: str, *, registry: Registry | None = None, **params: Any) -> Any:
    """Build the attribution attack ``name`` (``ifia``, ``adversarial_ifia``) with ``params``;
    call it as ``a(model, inputs, target, explain)`` to get an :class:`AttackResult`."""
    with use_registry(registry):
        return _build(get_registry().get("attack", name, argument="name"), params)


def _build(spec: Any, params: dict[str, Any]) -> Any:
    """``spec.factory(**params)`` after checking the names against the spec's options."""
    names, open_ = spec.option_names()
    if not open_:
        for key in params:
            if key not in names:
                raise UnknownNameError(f"{spec.kind} {spec.name!r}", key, names, what="option")
    return spec.factory(**params)


_build_attack = attack


@attrs.frozen(kw_only=True)
class AttackResult:
    """What an attribution attack returns (batched; one entry per sample)."""

    inputs: Tensor
    """The perturbed inputs ``x + δ`` (inside the ball and the data bounds)."""
    original: Tensor
    """The inputs the attack started from."""
    target: Tensor
    """The class each map explains, ``(B,)``."""
    maps_before: Tensor
    """``explain(original, target)``."""
    maps_after: Tensor
    """``explain(inputs, target)``."""
    objective_before: Tensor
    """The attack's dissimilarity ``D`` at the original inputs, ``(B,)``, measured with ``explain``."""
    objective_after: Tensor
    """``D`` at the perturbed inputs, ``(B,)``, measured with ``explain``."""
    metrics: Mapping[str, Tensor]
    """Map-to-map scores of ``maps_after`` against ``maps_before``: ``topk_intersection`` (IN),
    ``kendall_tau`` (CO), ``spearman_rho``, each ``(B,)``."""
    labels_before: Tensor
    """The model's predicted classes at ``original``."""
    labels_after: Tensor
    """The model's predicted classes at ``inputs``."""
    epsilon: float
    norm: str
    objective: str

    @property
    def delta(self) -> Tensor:
        """The perturbation ``inputs - original``."""
        return self.inputs - self.original

    @property
    def label_kept(self) -> Tensor:
        """Whether each sample's prediction is unchanged, ``(B,)`` bool."""
        return self.labels_after == self.labels_before

    def perturbation_norm(self) -> Tensor:
        """``||δ||`` per sample in the attack's norm."""
        flat = self.delta.reshape(self.delta.shape[0], -1)
        return flat.abs().amax(dim=1) if self.norm == "linf" else flat.norm(dim=1)


@attrs.frozen(kw_only=True)
class StrengthCurve:
    """A metric against the attack budget ε (:func:`attack_strength_curve`)."""

    epsilons: Tensor
    """``(E,)``."""
    scores: Tensor
    """``(E, B)``: the metric per budget and sample."""
    metric: str

    @property
    def mean(self) -> Tensor:
        """``(E,)``: the mean over samples (NaN-aware)."""
        return torch.nanmean(self.scores.to(torch.float64), dim=1)


def attack_strength_curve(
    attack: Any,
    model: Any,
    inputs: Tensor,
    target: Any,
    explain: Any,
    epsilons: Sequence[float],
    *,
    metric: str = "topk_intersection",
    registry: Registry | None = None,
    **params: Any,
) -> StrengthCurve:
    """Run an attack at each budget in ``epsilons`` and collect ``result.metrics[metric]``.

    Args:
        attack: an attack name (built with ``params`` and ``epsilon=`` each budget) or a factory
            ``epsilon -> attack``.
        metric: a key of :attr:`AttackResult.metrics`.
    """
    from wrapgrad.errors import WrapgradValueError

    eps = [float(e) for e in epsilons]
    if not eps:
        raise WrapgradValueError("epsilons: expected at least one budget, got none")
    rows = []
    for e in eps:
        if isinstance(attack, str):
            att = _build_attack(attack, registry=registry, epsilon=e, **params)
        elif callable(attack):
            att = attack(e)
        else:
            raise WrapgradValueError(
                f"attack: expected an attack name or a callable epsilon -> attack, got "
                f"{type(attack).__name__}"
            )
        result = att(model, inputs, target, explain)
        if metric not in result.metrics:
            raise UnknownNameError("metric", metric, result.metrics, what="attack metric")
        rows.append(result.metrics[metric])
    return StrengthCurve(
        epsilons=torch.tensor(eps, dtype=torch.float64), scores=torch.stack(rows), metric=metric
    )
