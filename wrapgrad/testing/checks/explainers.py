"""Checks of explainers (:class:`~wrapgrad.protocols.Explainer`).

The kit calls ``explainer(model, inputs, target, **arguments)`` on the probe (a 1x8x8 ReLU CNN,
a batch of three), building the call from the explainer's traits
(:class:`~wrapgrad.records.ExplainerTraits`). Layer and neuron methods (``traits.family``) are
built with ``layer="features.0"`` (a convolution) or ``layer="head.0"`` (a linear layer);
neuron methods get ``neuron_selector=(1,)``. The target is the probe's classes where
``traits.takes_target`` (by default every family but neuron methods), else None. Captum's
conventional arguments are passed when the spec's options name them: ``baselines`` (one random
baseline per sample; with ``traits.baseline_distribution`` a fixed distribution of four
reference inputs, the same for the batch and for each sample), ``feature_mask`` (four
features, the four 4x4 quadrants), ``sliding_window_shapes`` and ``strides`` (one quadrant).
Stochastic explainers are seeded through the global generators (torch's, NumPy's and Python's,
as the engine does), restored afterwards.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from wrapgrad.records import ExplainerSpec, ExplainerTraits, traits_of
from wrapgrad.testing.checks._base import (
    check,
    close,
    identical,
    model_unchanged,
    require,
    unchanged_when_raising,
)
from wrapgrad.testing.components import Component
from wrapgrad.testing.probes import LAYER, NEURON, NEURON_LAYER, Probe, make_probe

__all__ = ["ExplainerCall", "explainer_call"]


def _traits(component: Component) -> ExplainerTraits:
    spec = component.spec
    return spec.traits if isinstance(spec, ExplainerSpec) else ExplainerTraits(name=spec.name)


class ExplainerCall:
    """How the kit builds and calls one explainer component on a probe."""

    def __init__(self, component: Component, **build: Any) -> None:
        self.component = component
        self.traits = _traits(component)
        names, open_ = component.spec.option_names()
        self.takes = lambda option: open_ or option in names
        options: dict[str, Any] = {}
        if self.traits.family in ("layer", "neuron") and self.takes("layer"):
            options["layer"] = LAYER if self.traits.family == "layer" else NEURON_LAYER
        self.explainer = component.build(**{**options, **build})
        # What the engine and wrap() read: the built explainer's own traits.
        self.traits = traits_of(self.explainer)

    def arguments(self, probe: Probe) -> dict[str, Any]:
        """The keyword arguments of a call on ``probe``."""
        kw: dict[str, Any] = {}
        if self.takes("baselines"):
            distribution = self.traits.baseline_distribution
            kw["baselines"] = probe.references if distribution else probe.baselines
        if self.takes("feature_mask"):
            kw["feature_mask"] = probe.feature_mask
        if self.takes("sliding_window_shapes"):
            kw["sliding_window_shapes"] = (1, 4, 4)
            if self.takes("strides"):
                kw["strides"] = (1, 4, 4)
        if self.traits.family == "neuron":
            kw["neuron_selector"] = NEURON
        return kw

    def target(self, probe: Probe) -> Any:
        """The probe's classes where the traits say the explainer takes a target, else None."""
        return probe.target if self.traits.takes_target else None

    def __call__(self, probe: Probe, **kwargs: Any) -> Any:
        return self.explainer(
            probe.model, probe.inputs, self.target(probe), **{**self.arguments(probe), **kwargs}
        )


def explainer_call(component: Component, **build: Any) -> ExplainerCall:
    """The :class:`ExplainerCall` of ``component`` (built with the kit's options and ``build``)."""
    return ExplainerCall(component, **build)


def _maps(out: Any) -> list[torch.Tensor]:
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    for t in outs:
        require(isinstance(t, torch.Tensor), f"expected tensors, got {type(t).__name__}")
    return outs


@check("explainer", applies=lambda c: isinstance(c.spec, ExplainerSpec))
def check_explainer_traits(component: Component) -> None:
    """The built explainer carries the traits its spec declares (``traits_of(explainer) ==
    spec.traits``, name aside): the engine and ``wrap()`` read the explainer, not the spec, so a
    declaration the explainer does not carry has no effect."""
    call = explainer_call(component)
    declared = _traits(component)
    carried = call.traits.evolve(name=declared.name)
    require(
        carried == declared,
        f"the spec declares {declared}, the built explainer carries {call.traits} (give it a "
        "'traits' attribute)",
    )


@check("explainer")
def check_explainer_output(component: Component) -> None:
    """Maps have the inputs' shape (layer methods: batch first), the inputs' floating dtype and
    device, and finite values."""
    call = explainer_call(component)
    probe = make_probe()
    for out in _maps(call(probe)):
        if call.traits.family == "layer":
            require(
                out.dim() >= 1 and out.shape[0] == probe.inputs.shape[0],
                f"a layer map must be batch first ({probe.inputs.shape[0]} rows), got shape "
                f"{tuple(out.shape)}",
            )
        else:
            require(
                out.shape == probe.inputs.shape,
                f"expected maps of the inputs' shape {tuple(probe.inputs.shape)}, got "
                f"{tuple(out.shape)}",
            )
        require(
            out.dtype == probe.inputs.dtype, f"expected dtype {probe.inputs.dtype}, got {out.dtype}"
        )
        require(
            out.device == probe.inputs.device,
            f"expected device {probe.inputs.device}, got {out.device}",
        )
        require(bool(torch.isfinite(out).all()), "the maps have non-finite values")


@check("explainer")
def check_explainer_model_unchanged(component: Component) -> None:
    """The model is bitwise unchanged after a call: parameters, buffers, gradients, flags,
    hooks and grad mode; the inputs too."""
    call = explainer_call(component)
    probe = make_probe()
    inputs = probe.inputs.clone()
    with model_unchanged(probe.model):
        call(probe)
    identical(probe.inputs, inputs, "the inputs after the call")


@check("explainer")
def check_explainer_model_unchanged_on_error(component: Component) -> None:
    """When the model raises half-way through a call, the error comes out and the model is
    bitwise unchanged (no hook or flag left behind)."""
    call = explainer_call(component)
    probe = make_probe()
    unchanged_when_raising(probe.model, lambda: call(probe), "the explainer")


def _seeded(call: ExplainerCall, probe: Probe, seed: int) -> Any:
    """A call with torch's, NumPy's and Python's global generators seeded, then restored."""
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            np.random.seed(seed)
            random.seed(seed)
            return call(probe)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


@check("explainer")
def check_explainer_seed(component: Component) -> None:
    """Repeatable: a deterministic explainer gives bitwise the same maps twice; a stochastic one
    (``traits.stochastic``, drawing from torch's global generator) gives the same maps for the
    same global seed and different maps for different seeds."""
    call = explainer_call(component)
    probe = make_probe()
    first = _seeded(call, probe, 0)
    identical(_seeded(call, probe, 0), first, "two calls with the same seed")
    if call.traits.stochastic:
        other = _seeded(call, probe, 1)
        require(
            any(not torch.equal(a, b) for a, b in zip(_maps(first), _maps(other), strict=True)),
            "traits say stochastic, but seeds 0 and 1 give the same maps",
        )


@check("explainer", applies=lambda c: not _traits(c).stochastic)
def check_explainer_batch_independence(component: Component) -> None:
    """The maps of a batch are the maps of its samples, concatenated (promised by every
    deterministic explainer: a sample's map does not depend on the other samples)."""
    call = explainer_call(component)
    probe = make_probe()
    whole = _maps(call(probe))
    parts = [_maps(call(probe.rows(i))) for i in range(probe.inputs.shape[0])]
    for j, out in enumerate(whole):
        close(out, torch.cat([p[j] for p in parts]), "the batch against its samples one by one")


def _differentiable(component: Component) -> bool:
    return _traits(component).differentiable


@check("explainer", applies=_differentiable)
def check_explainer_create_graph(component: Component) -> None:
    """``traits.differentiable``: with ``create_graph=True`` the maps keep their graph, and
    gradients of the maps reach the model's parameters (finite, not all zero), while the model
    itself is unchanged."""
    call = explainer_call(component)
    probe = make_probe()
    params = [p for p in probe.model.parameters() if p.requires_grad]
    with model_unchanged(probe.model):
        outs = _maps(call(probe, create_graph=True))
        require(
            all(o.requires_grad for o in outs), "with create_graph=True the maps carry no graph"
        )
        total = sum((o * o).sum() for o in outs)
        grads = torch.autograd.grad(total, params, allow_unused=True)
    grads = [g for g in grads if g is not None]
    require(grads, "no parameter is reached from the maps")
    require(all(bool(torch.isfinite(g).all()) for g in grads), "non-finite gradients")
    require(any(bool(g.abs().sum() > 0) for g in grads), "the gradients are all zero")


class _ScaleWeights:
    """A weight perturber with the protocol members only: each weight times one uniform
    factor in [0.5, 1.5] per tensor and sample."""

    target = "weight"
    is_zero = False

    def parameter_names(self, model: Any) -> list[str]:
        return [name for name, _ in model.named_parameters()]

    def sample(
        self, w: torch.Tensor, n: int, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        scale = 0.5 + torch.rand((n,) + (1,) * w.dim(), generator=generator, device=w.device)
        return w.detach().unsqueeze(0) * scale.to(w.dtype)


@check(
    "explainer",
    applies=lambda c: _traits(c).vmap_layout is not None,
)
def check_explainer_vmap(component: Component) -> None:
    """``traits.vmap_layout``: the explainer runs on stacked weight samples under ``vmap`` with
    the maps of one functional call per weight sample (the engine's two strategies agree; for a
    stochastic explainer too, as the engine seeds each sample's own draws)."""
    from wrapgrad.engine import monte_carlo

    call = explainer_call(component)
    probe = make_probe()

    def run(strategy: str) -> Any:
        return monte_carlo(
            call.explainer,
            probe.model,
            probe.inputs,
            call.target(probe),
            weight_sampler=_ScaleWeights(),
            n_models=3,
            n_inputs=1,
            seed=0,
            strategy=strategy,
            attribute_kwargs=call.arguments(probe),
        )

    with model_unchanged(probe.model):
        close(run("vmap"), run("loop"), "strategy='vmap' against strategy='loop'")
