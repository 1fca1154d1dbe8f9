"""Checks of perturbers (:class:`~wrapgrad.protocols.InputPerturber`,
:class:`~wrapgrad.protocols.WeightPerturber`, :class:`~wrapgrad.protocols.StatePerturber`),
by the spec's ``target``.

The zero configuration (``is_zero``) is :attr:`Component.zero_options
<wrapgrad.testing.Component.zero_options>`, by default every factory option whose default is a
positive number, set to 0.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor

from wrapgrad.protocols import InputPerturber, StatePerturber, WeightPerturber
from wrapgrad.records import PerturberSpec
from wrapgrad.testing.checks._base import (
    check,
    close,
    identical,
    require,
    untouched,
)
from wrapgrad.testing.components import Component
from wrapgrad.testing.probes import make_probe

_PROTOCOLS = {"input": InputPerturber, "weight": WeightPerturber, "state": StatePerturber}


def _target(component: Component) -> str:
    spec = component.spec
    return spec.target if isinstance(spec, PerturberSpec) else "input"


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _draw(perturber: Any, target: str, seed: int) -> tuple[Tensor, Tensor]:
    """``(value, draw)``: what the perturber was given and what it drew from ``seed``."""
    probe = make_probe()
    if target == "input":
        x = probe.inputs
        return x, perturber.sample(x, 2, generator=_gen(seed))
    if target == "weight":
        names = list(perturber.parameter_names(probe.model))
        w = dict(probe.model.named_parameters())[names[0]]
        return w, perturber.sample(w, 2, generator=_gen(seed))
    state = torch.randn(3, 4, generator=_gen(99))
    return state, perturber.increment(state, 0.25, generator=_gen(seed))


@check("perturber")
def check_perturber_protocol(component: Component) -> None:
    """The perturber has exactly what its protocol lists (``target`` equal to the spec's,
    a boolean ``is_zero``, ``sample`` or ``increment``, ``parameter_names`` for weights), and a
    weight perturber selects parameters the model has."""
    target = _target(component)
    perturber = component.build()
    require(
        getattr(perturber, "target", None) == target,
        f"target is {getattr(perturber, 'target', None)!r}, the spec says {target!r}",
    )
    require(
        isinstance(perturber, _PROTOCOLS[target]),
        f"does not follow {_PROTOCOLS[target].__name__} (members: target, is_zero, "
        + (
            "increment)"
            if target == "state"
            else "sample" + (", parameter_names)" if target == "weight" else ")")
        ),
    )
    require(
        isinstance(perturber.is_zero, bool),
        f"is_zero is a {type(perturber.is_zero).__name__}, not a bool",
    )
    if target == "weight":
        probe = make_probe()
        names = list(perturber.parameter_names(probe.model))
        known = dict(probe.model.named_parameters())
        require(names, "parameter_names selects no parameter of the probe model")
        unknown = [n for n in names if n not in known]
        require(not unknown, f"parameter_names gives names the model does not have: {unknown}")


@check("perturber")
def check_perturber_draws(component: Component) -> None:
    """Draws have the documented shape (``(n, *x.shape)``; a state increment: the state's
    shape), dtype and device; the same generator state gives the same draws, another seed other
    draws; the value itself, the model and torch's global random state are unchanged."""
    target = _target(component)
    perturber = component.build()
    probe = make_probe()
    with untouched(probe.model):
        value, first = _draw(perturber, target, 0)
        before = value.detach().clone()
        _, again = _draw(perturber, target, 0)
        _, other = _draw(perturber, target, 1)
    shape = tuple(value.shape) if target == "state" else (2, *value.shape)
    require(
        tuple(first.shape) == shape, f"expected draws of shape {shape}, got {tuple(first.shape)}"
    )
    require(
        first.dtype == value.dtype and first.device == value.device,
        f"draws are {first.dtype} on {first.device}, the value {value.dtype} on {value.device}",
    )
    identical(again, first, "two draws from the same generator state")
    identical(value.detach(), before, "the value after sampling")
    if not perturber.is_zero:
        require(not torch.equal(first, other), "seeds 0 and 1 give the same draws")


def _zero_options(component: Component) -> dict[str, Any]:
    """The options that switch the noise off: :attr:`Component.zero_options`, else the first
    of (each positive-number option at 0 on its own, all of them at 0) that builds a perturber
    reporting ``is_zero``."""
    if component.zero_options is not None:
        return dict(component.zero_options)
    try:
        params = inspect.signature(component.spec.factory).parameters.values()
    except (TypeError, ValueError):
        return {}
    numbers = [
        p.name
        for p in params
        if isinstance(p.default, (int, float)) and not isinstance(p.default, bool) and p.default > 0
    ]
    for candidate in [{n: 0.0} for n in numbers] + [dict.fromkeys(numbers, 0.0)]:
        try:
            if component.build(**candidate).is_zero is True:
                return candidate
        except Exception:  # an option that may not be 0: try the next
            continue
    return dict.fromkeys(numbers, 0.0)


def _copies(perturber: Any, target: str) -> bool:
    """Whether the perturber's draws are exact copies (a state perturber: zero increments)."""
    value, draws = _draw(perturber, target, 0)
    if target == "state":
        return torch.equal(draws, torch.zeros_like(value))
    return torch.equal(draws, value.detach().unsqueeze(0).expand_as(draws))


@check("perturber")
def check_perturber_zero(component: Component) -> None:
    """``is_zero`` means no noise: the zero configuration reports ``is_zero`` and draws exact
    copies of the value (a state perturber: zero increments); the kit's configuration draws
    copies exactly when it reports ``is_zero``."""
    target = _target(component)
    zero = _zero_options(component)
    perturber = component.build(**zero)
    require(
        perturber.is_zero,
        f"with {zero or 'no option'} set to 0 is_zero is False (give the options that switch the "
        "noise off as Component(spec, zero_options={...}))",
    )
    require(_copies(perturber, target), f"with {zero} at 0 the draws are not exact copies")
    noisy = component.build()
    if noisy.is_zero:
        require(
            _copies(noisy, target), "is_zero is True but the draws of zero noise are not copies"
        )
    else:
        require(not _copies(noisy, target), "is_zero is False but the draws are exact copies")


@check("perturber", applies=lambda c: _target(c) == "state")
def check_perturber_increment_scale(component: Component) -> None:
    """A state increment is ``Σ √dt ξ``: from the same generator state, four times ``dt`` gives
    twice the increment."""
    perturber = component.build()
    state = torch.randn(3, 4, generator=_gen(99))
    small = perturber.increment(state, 0.25, generator=_gen(0))
    large = perturber.increment(state, 1.0, generator=_gen(0))
    close(large, 2 * small, "increment(dt=1) against 2 * increment(dt=0.25)")
