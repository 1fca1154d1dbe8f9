"""Checks of training objectives (:class:`~wrapgrad.protocols.Objective`):
``objective(model, inputs, target, generator=g)`` on the probe model in training mode, with
the probe batch (in [0, 1]) and its labels."""

from __future__ import annotations

from typing import Any

import torch

from wrapgrad.testing.checks._base import (
    check,
    identical,
    model_unchanged,
    require,
    rng_untouched,
    unchanged_when_raising,
)
from wrapgrad.testing.components import Component
from wrapgrad.testing.probes import Probe, make_probe


def _loss(objective: Any, probe: Probe, seed: int = 0) -> Any:
    return objective(
        probe.model, probe.inputs, probe.target, generator=torch.Generator().manual_seed(seed)
    )


def _train_probe() -> Probe:
    probe = make_probe()
    probe.model.train()
    return probe


@check("objective")
def check_objective_loss(component: Component) -> None:
    """The loss is a finite floating-point scalar whose gradients reach the model's parameters
    (finite, not all zero)."""
    objective = component.build()
    probe = _train_probe()
    loss = _loss(objective, probe)
    require(
        isinstance(loss, torch.Tensor) and loss.dim() == 0,
        f"expected a 0-d tensor, got {getattr(loss, 'shape', type(loss).__name__)}",
    )
    require(loss.is_floating_point() and bool(torch.isfinite(loss)), f"the loss is {loss}")
    require(loss.requires_grad, "the loss carries no graph to the parameters")
    params = list(probe.model.parameters())
    grads = [g for g in torch.autograd.grad(loss, params, allow_unused=True) if g is not None]
    require(grads, "no parameter is reached from the loss")
    require(all(bool(torch.isfinite(g).all()) for g in grads), "non-finite gradients")
    require(any(bool(g.abs().sum() > 0) for g in grads), "the gradients are all zero")


@check("objective")
def check_objective_changes_no_parameter(component: Component) -> None:
    """Computing the loss changes nothing in the model (no parameter, buffer, ``.grad``, flag
    or hook; the training loop owns the optimiser step), nor the inputs or torch's global
    random state."""
    objective = component.build()
    probe = _train_probe()
    inputs = probe.inputs.clone()
    with model_unchanged(probe.model, "computing the loss"), rng_untouched():
        _loss(objective, probe)
    identical(probe.inputs, inputs, "the inputs after the call")


@check("objective")
def check_objective_repeatable(component: Component) -> None:
    """The same generator state gives bitwise the same loss."""
    objective = component.build()
    probe = _train_probe()
    identical(
        _loss(objective, probe).detach(),
        _loss(objective, probe).detach(),
        "two losses from the same generator seed",
    )


@check("objective")
def check_objective_model_unchanged_on_error(component: Component) -> None:
    """When the model raises half-way, the error comes out and the model is unchanged."""
    objective = component.build()
    probe = _train_probe()
    unchanged_when_raising(probe.model, lambda: _loss(objective, probe), "the objective")
