"""Checks of calibrators: ``calibrator(model, data, perturber="weight", **caps)`` with the probe
model and a data set it is 100 % right on (its own predictions), so enough noise lowers its
accuracy; ``caps`` are the spec's smoke caps (for calibrators they are call options)."""

from __future__ import annotations

import math
from typing import Any

from wrapgrad.options import accepted
from wrapgrad.testing.checks._base import (
    check,
    require,
    unchanged_when_raising,
    untouched,
)
from wrapgrad.testing.components import Component
from wrapgrad.testing.probes import Probe, make_probe


def _calibrate(component: Component, probe: Probe) -> Any:
    calibrator = component.build()
    names, open_ = accepted(calibrator)
    cheap = {k: v for k, v in component.call_options().items() if open_ or k in names}
    return calibrator(probe.model, (probe.inputs, probe.labels), perturber="weight", **cheap)


@check("calibrator")
def check_calibrator_result(component: Component) -> None:
    """The record has a finite noise level ``sigma >= 0`` and a finite measured ``drop``; the
    same call twice gives the same level; model and global random state are unchanged."""
    probe = make_probe()
    with untouched(probe.model):
        first = _calibrate(component, probe)
        second = _calibrate(component, probe)
    sigma, drop = getattr(first, "sigma", None), getattr(first, "drop", None)
    require(
        isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0,
        f"sigma is {sigma!r}, expected a finite level >= 0",
    )
    require(isinstance(drop, (int, float)) and math.isfinite(drop), f"drop is {drop!r}")
    require(second.sigma == sigma, f"two identical calls gave sigma {sigma} and {second.sigma}")


@check("calibrator")
def check_calibrator_model_unchanged_on_error(component: Component) -> None:
    """When the model raises half-way, the error comes out and the model is unchanged."""
    probe = make_probe()
    unchanged_when_raising(probe.model, lambda: _calibrate(component, probe), "the calibrator")
