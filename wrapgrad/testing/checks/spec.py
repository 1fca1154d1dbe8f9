"""Checks every component gets: its spec record is consistent and it builds."""

from __future__ import annotations

from wrapgrad.records import KINDS, EnhancerSpec
from wrapgrad.testing.checks._base import check, require
from wrapgrad.testing.components import Component

_ALL = tuple(KINDS)
#: Kinds whose factory builds the component from options alone.
_BUILT = (
    "explainer",
    "perturber",
    "enhancer",
    "metric",
    "attack",
    "objective",
    "calibrator",
    "model",
    "pipeline_step",
)


@check(*_ALL)
def check_spec(component: Component) -> None:
    """The spec is consistent: a one-line summary, option names that can be read, ``smoke``
    caps and enhancer ``levels`` that name options the factory takes."""
    spec = component.spec
    require(spec.summary.strip(), "the spec has no summary (wrapgrad plugins lists it)")
    require("\n" not in spec.summary, "the summary is more than one line")
    names, open_ = spec.option_names()
    if not open_:
        unknown = sorted(set(spec.smoke_caps()) - names)
        require(
            not unknown, f"smoke caps {unknown} name no option of the factory ({sorted(names)})"
        )
        unknown = sorted(set(component.options) - names)
        require(not unknown, f"options {unknown} name no option of the factory")
    if isinstance(spec, EnhancerSpec):
        targets = spec.level_targets()
        bad = {k: v for k, v in targets.items() if v not in ("input", "weight")}
        require(not bad, f"levels {bad}: a level sets 'input' or 'weight' noise")
        if not open_:
            unknown = sorted(set(targets) - names)
            require(not unknown, f"levels {unknown} name no option of the factory")


@check(*_BUILT)
def check_builds(component: Component) -> None:
    """The factory builds the component from the kit's options (the ``smoke`` caps) and what
    it builds is callable (a perturber: has its protocol's ``target``)."""
    if component.kind == "explainer":
        from wrapgrad.testing.checks.explainers import explainer_call

        built = explainer_call(component).explainer  # layer methods get the probe's layer
    else:
        built = component.build()
    if component.kind == "perturber":
        require(hasattr(built, "target"), "the perturber has no 'target' attribute")
    elif component.kind == "model":
        from torch import nn

        require(
            isinstance(built, nn.Module), f"expected a torch.nn.Module, got {type(built).__name__}"
        )
    elif component.kind == "pipeline_step":
        require(callable(getattr(built, "run", built)), "the step has no run method")
    else:
        require(
            callable(built), f"the factory built a {type(built).__name__}, which is not callable"
        )
