"""Checks of metrics (:class:`~wrapgrad.protocols.Metric`), by the spec's ``requires``:

* ``"maps"``: ``metric(a, b)`` on two maps of the probe's shape;
* ``"mask"``: ``metric(attributions, mask)`` with the probe's boolean mask (the upper-left
  quadrant of each image);
* ``"model"``: ``metric(model, inputs, target, explain)`` with the probe model and ``explain =
  wrapgrad.wrap(model, gradient_explainer)``;
* ``"mosaic"``: ``metric(model, mosaics, target, explain, positions)`` with the probe's 2x2
  mosaics ``(3, 1, 16, 16)`` of its images and the positions of each sample's own tiles (the
  probe model pools adaptively, so it takes them).

Scores are one per sample. Maps and mask metrics promise that a batch scores as its samples one
by one; model-based metrics do not (their perturbations may be drawn for the whole batch).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from wrapgrad.records import MetricSpec
from wrapgrad.testing.checks._base import (
    check,
    close,
    identical,
    model_unchanged,
    require,
    rng_untouched,
    unchanged_when_raising,
)
from wrapgrad.testing.components import Component
from wrapgrad.testing.probes import Probe, gradient_explainer, make_probe


def _requires(component: Component) -> str:
    spec = component.spec
    return spec.requires if isinstance(spec, MetricSpec) else "maps"


def _direction(component: Component) -> bool | None:
    spec = component.spec
    return spec.higher_is_better if isinstance(spec, MetricSpec) else None


def _maps(probe: Probe, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A random map and a noisy copy of it (noise of half its standard deviation)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(probe.inputs.shape, generator=g)
    return a, a + 0.5 * torch.randn(probe.inputs.shape, generator=g)


def _arguments(component: Component, probe: Probe) -> tuple[Any, ...]:
    """The positional arguments of one call on ``probe``."""
    requires = _requires(component)
    if requires == "maps":
        return _maps(probe)
    if requires == "mask":
        g = torch.Generator().manual_seed(0)
        return probe.mask.float() + 0.1 * torch.rand(probe.mask.shape, generator=g), probe.mask
    import wrapgrad

    explain = wrapgrad.wrap(probe.model, gradient_explainer)
    if requires == "mosaic":
        return probe.model, probe.mosaics, probe.target, explain, probe.positions
    return probe.model, probe.inputs, probe.target, explain


def _scores(metric: Any, args: tuple[Any, ...], rows: int) -> Tensor:
    out = metric(*args)
    require(isinstance(out, Tensor), f"expected a tensor of scores, got {type(out).__name__}")
    require(
        tuple(out.shape) == (rows,),
        f"expected one score per sample, shape ({rows},), got {tuple(out.shape)}",
    )
    require(out.is_floating_point(), f"expected floating-point scores, got {out.dtype}")
    require(bool(torch.isfinite(out).all()), f"non-finite scores {out.tolist()}")
    return out


@check("metric")
def check_metric_scores(component: Component) -> None:
    """One finite floating-point score per sample, shape ``(B,)``; the arguments unchanged;
    the declared direction (``MetricSpec.higher_is_better``) matches the metric's own
    ``higher_is_better`` where it has one."""
    metric = component.build()
    probe = make_probe()
    args = _arguments(component, probe)
    tensors = [a.clone() for a in args if isinstance(a, Tensor)]
    _scores(metric, args, probe.inputs.shape[0])
    for before, after in zip(tensors, [a for a in args if isinstance(a, Tensor)], strict=True):
        identical(after, before, "an argument after the call")
    own = getattr(metric, "higher_is_better", _direction(component))
    require(
        own == _direction(component),
        f"the metric says higher_is_better={own!r}, its spec {_direction(component)!r}",
    )


@check("metric")
def check_metric_repeatable(component: Component) -> None:
    """The same call twice gives bitwise the same scores, and torch's global random state is
    unchanged (a metric that draws takes a seed)."""
    metric = component.build()
    probe = make_probe()
    args = _arguments(component, probe)
    with rng_untouched():
        first = _scores(metric, args, probe.inputs.shape[0])
        identical(_scores(metric, args, probe.inputs.shape[0]), first, "two identical calls")


@check("metric", applies=lambda c: _requires(c) in ("maps", "mask"))
def check_metric_batch_independence(component: Component) -> None:
    """Maps and mask metrics: the scores of a batch are the scores of its samples one by one."""
    metric = component.build()
    probe = make_probe()
    args = _arguments(component, probe)
    whole = _scores(metric, args, probe.inputs.shape[0])
    parts = [_scores(metric, tuple(a[i : i + 1] for a in args), 1) for i in range(len(whole))]
    close(whole, torch.cat(parts), "the batch against its samples one by one")


@check(
    "metric",
    applies=lambda c: _requires(c) in ("maps", "mask") and _direction(c) is not None,
)
def check_metric_direction(component: Component) -> None:
    """The declared direction holds: a map compared with itself scores at least as well as
    against a noisy copy (maps); the mask itself as a map scores at least as well as its
    complement (mask); strictly better for at least one sample."""
    metric = component.build()
    probe = make_probe()
    rows = probe.inputs.shape[0]
    if _requires(component) == "maps":
        a, noisy = _maps(probe)
        good, bad = _scores(metric, (a, a), rows), _scores(metric, (a, noisy), rows)
        what = "a map against itself", "against a noisy copy"
    else:
        g = torch.Generator().manual_seed(0)
        jitter = 0.1 * torch.rand(probe.mask.shape, generator=g)
        good = _scores(metric, (probe.mask.float() + jitter, probe.mask), rows)
        bad = _scores(metric, ((~probe.mask).float() + jitter, probe.mask), rows)
        what = "the mask as a map", "its complement"
    sign = 1.0 if _direction(component) else -1.0
    word = "higher" if _direction(component) else "lower"
    require(
        bool((sign * (good - bad) >= 0).all()) and bool((sign * (good - bad) > 0).any()),
        f"declared {word} is better, but {what[0]} scores {good.tolist()} and {what[1]} "
        f"{bad.tolist()}",
    )


#: The call forms that run the model.
_MODEL_FORMS = ("model", "mosaic")


@check("metric", applies=lambda c: _requires(c) in _MODEL_FORMS)
def check_metric_model_unchanged(component: Component) -> None:
    """Model-based metrics (and mosaic ones) leave the model and the inputs bitwise unchanged."""
    metric = component.build()
    probe = make_probe()
    args = _arguments(component, probe)
    inputs = args[1].clone()
    with model_unchanged(probe.model):
        _scores(metric, args, probe.inputs.shape[0])
    identical(args[1], inputs, "the inputs after the call")


@check("metric", applies=lambda c: _requires(c) in _MODEL_FORMS)
def check_metric_model_unchanged_on_error(component: Component) -> None:
    """When the model raises half-way, the error comes out and the model is unchanged."""
    metric = component.build()
    probe = make_probe()
    # Fresh arguments per call: wrap() probes the model once per new input signature.
    unchanged_when_raising(probe.model, lambda: metric(*_arguments(component, probe)), "the metric")
