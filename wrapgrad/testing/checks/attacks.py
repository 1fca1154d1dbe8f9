"""Checks of attacks (:class:`~wrapgrad.protocols.Attack`): ``attack(model, inputs, target,
explain)`` on the probe, with ``explain = wrapgrad.wrap(model, gradient_explainer)``."""

from __future__ import annotations

from typing import Any

import torch

from wrapgrad.testing.checks._base import (
    check,
    identical,
    require,
    unchanged_when_raising,
    untouched,
)
from wrapgrad.testing.components import Component
from wrapgrad.testing.probes import Probe, gradient_explainer, make_probe


def _attack(component: Component, probe: Probe) -> Any:
    import wrapgrad

    attack = component.build()
    explain = wrapgrad.wrap(probe.model, gradient_explainer)
    return attack(probe.model, probe.inputs, probe.target, explain)


def _norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.reshape(delta.shape[0], -1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


@check("attack")
def check_attack_result(component: Component) -> None:
    """The result's ``inputs`` are the perturbed inputs: the inputs' shape, dtype and device,
    finite; inside the ball the result states (``epsilon`` and ``norm``, if it has them)."""
    probe = make_probe()
    result = _attack(component, probe)
    adv = getattr(result, "inputs", None)
    require(
        isinstance(adv, torch.Tensor), "the result has no tensor 'inputs' (the perturbed inputs)"
    )
    x = probe.inputs
    require(
        adv.shape == x.shape and adv.dtype == x.dtype and adv.device == x.device,
        f"inputs are {tuple(adv.shape)} {adv.dtype} on {adv.device}, expected "
        f"{tuple(x.shape)} {x.dtype} on {x.device}",
    )
    require(bool(torch.isfinite(adv).all()), "non-finite perturbed inputs")
    epsilon, norm = getattr(result, "epsilon", None), getattr(result, "norm", None)
    if isinstance(epsilon, (int, float)) and norm in ("linf", "l2"):
        size = _norm(adv.detach() - x, norm)
        require(
            bool((size <= epsilon * (1 + 1e-5) + 1e-6).all()),
            f"perturbations of {norm} size {size.tolist()} leave the ball of radius {epsilon}",
        )


@check("attack")
def check_attack_keeps_prediction(component: Component) -> None:
    """The protocol's promise: the perturbed inputs keep the model's prediction."""
    probe = make_probe()
    result = _attack(component, probe)
    with torch.no_grad():
        before = probe.model(probe.inputs).argmax(dim=1)
        after = probe.model(result.inputs).argmax(dim=1)
    require(torch.equal(before, after), f"predictions {before.tolist()} became {after.tolist()}")


@check("attack")
def check_attack_model_unchanged(component: Component) -> None:
    """The model and the inputs are bitwise unchanged, the same attack twice gives the same
    perturbed inputs, and torch's global random state is unchanged."""
    probe = make_probe()
    inputs = probe.inputs.clone()
    with untouched(probe.model):
        first = _attack(component, probe)
        second = _attack(component, probe)
    identical(probe.inputs, inputs, "the inputs after the attack")
    identical(second.inputs, first.inputs, "the perturbed inputs of two identical attacks")


@check("attack")
def check_attack_model_unchanged_on_error(component: Component) -> None:
    """When the model raises half-way, the error comes out and the model is unchanged."""
    probe = make_probe()
    unchanged_when_raising(probe.model, lambda: _attack(component, probe), "the attack")
