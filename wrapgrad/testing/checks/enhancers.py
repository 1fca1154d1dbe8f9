"""Checks of enhancers (:class:`~wrapgrad.protocols.Enhancer`).

The kit calls ``enhancer(explainer, model, inputs, target)`` with its own base explainer, the
plain input gradient of the target logit (:data:`~wrapgrad.testing.probes.gradient_explainer`,
traits: gradient-only, ``vmap_layout="block"``, differentiable), on the probe model and batch.

What enhancers do not promise: that a batch equals its samples one by one (the noise drawn for
a batch depends on its size), so that check is not run for them.
"""

from __future__ import annotations

from typing import Any

import torch

from wrapgrad.records import EnhancerSpec
from wrapgrad.testing.checks._base import (
    check,
    close,
    fail,
    identical,
    model_unchanged,
    require,
    unchanged_when_raising,
    untouched,
)
from wrapgrad.testing.components import Component
from wrapgrad.testing.probes import Probe, gradient_explainer, make_probe


def _run(component: Component, probe: Probe, **options: Any) -> Any:
    enhancer = component.build(**options)
    return enhancer(gradient_explainer, probe.model, probe.inputs, probe.target)


def _takes(component: Component, option: str) -> bool:
    names, open_ = component.spec.option_names()
    return open_ or option in names


def _seed(component: Component, seed: int) -> dict[str, Any]:
    if _takes(component, "seed"):
        return {"seed": seed}
    if _takes(component, "generator"):
        return {"generator": torch.Generator().manual_seed(seed)}
    fail("the enhancer takes neither seed= nor generator= (results must be repeatable)")
    return {}


def _levels(component: Component) -> dict[str, str]:
    spec = component.spec
    return spec.level_targets() if isinstance(spec, EnhancerSpec) else {}


@check("enhancer")
def check_enhancer_output(component: Component) -> None:
    """The enhanced maps have the base explainer's shape, dtype and device, and are finite."""
    probe = make_probe()
    base = gradient_explainer(probe.model, probe.inputs, probe.target)
    out = _run(component, probe, **_seed(component, 0))
    require(isinstance(out, torch.Tensor), f"expected a tensor, got {type(out).__name__}")
    require(out.shape == base.shape, f"expected shape {tuple(base.shape)}, got {tuple(out.shape)}")
    require(out.dtype == base.dtype, f"expected dtype {base.dtype}, got {out.dtype}")
    require(out.device == base.device, f"expected device {base.device}, got {out.device}")
    require(bool(torch.isfinite(out).all()), "the maps have non-finite values")


@check("enhancer")
def check_enhancer_model_unchanged(component: Component) -> None:
    """The model and the inputs are bitwise unchanged after a call, and torch's global random
    state too (draws come from the enhancer's own generator)."""
    probe = make_probe()
    inputs = probe.inputs.clone()
    with untouched(probe.model):
        _run(component, probe, **_seed(component, 0))
    identical(probe.inputs, inputs, "the inputs after the call")


@check("enhancer")
def check_enhancer_model_unchanged_on_error(component: Component) -> None:
    """When the model raises half-way through the samples, the error comes out and the model
    is bitwise unchanged."""
    probe = make_probe()
    options = _seed(component, 0)
    unchanged_when_raising(probe.model, lambda: _run(component, probe, **options), "the enhancer")


@check("enhancer")
def check_enhancer_seed(component: Component) -> None:
    """The same seed gives bitwise the same maps; different seeds give different maps."""
    probe = make_probe()
    first = _run(component, probe, **_seed(component, 0))
    identical(_run(component, probe, **_seed(component, 0)), first, "two calls with seed 0")
    other = _run(component, probe, **_seed(component, 1))
    require(not torch.equal(first, other), "seeds 0 and 1 give the same maps (is the seed used?)")


@check("enhancer", applies=lambda c: _takes(c, "max_batch"))
def check_enhancer_max_batch(component: Component) -> None:
    """Results do not depend on ``max_batch`` (rows per explainer call): one row per call
    gives the maps of the default chunking."""
    probe = make_probe()
    seed = _seed(component, 0)
    close(
        _run(component, probe, max_batch=1, **seed),
        _run(component, probe, **seed),
        "max_batch=1 against the default",
        rtol=1e-5,
        atol=1e-7,
    )


@check("enhancer", applies=lambda c: bool(_levels(c)))
def check_enhancer_zero_noise(component: Component) -> None:
    """With every declared noise level (``EnhancerSpec.levels``) at 0, the enhancer reduces to
    the base explainer: its maps (``aggregate="mean"``, the default), their squares
    (``"mean_square"``) or zeros (``"variance"``), read from the enhancer's ``aggregate``."""
    probe = make_probe()
    zero = dict.fromkeys(_levels(component), 0.0)
    enhancer = component.build(**zero, **_seed(component, 0))
    out = enhancer(gradient_explainer, probe.model, probe.inputs, probe.target)
    base = gradient_explainer(probe.model, probe.inputs, probe.target)
    aggregate = getattr(enhancer, "aggregate", "mean")
    expected = {"mean": base, "mean_square": base * base, "variance": torch.zeros_like(base)}
    require(aggregate in expected, f"unknown aggregate {aggregate!r}")
    close(
        out,
        expected[aggregate],
        f"zero noise ({zero}, aggregate {aggregate!r}) against the base explainer",
    )


@check("enhancer", applies=lambda c: _takes(c, "create_graph"))
def check_enhancer_create_graph(component: Component) -> None:
    """``create_graph=True``: the enhanced maps keep their graph, and gradients of the maps reach
    the model's parameters (finite, not all zero), while the model is unchanged."""
    probe = make_probe()
    params = list(probe.model.parameters())
    with model_unchanged(probe.model):
        out = _run(component, probe, create_graph=True, **_seed(component, 0))
        require(out.requires_grad, "with create_graph=True the maps carry no graph")
        grads = torch.autograd.grad((out * out).sum(), params, allow_unused=True)
    grads = [g for g in grads if g is not None]
    require(grads, "no parameter is reached from the maps")
    require(all(bool(torch.isfinite(g).all()) for g in grads), "non-finite gradients")
    require(any(bool(g.abs().sum() > 0) for g in grads), "the gradients are all zero")
