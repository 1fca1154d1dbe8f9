"""Every registered built-in component passes the conformance kit (``wrapgrad.testing``).

The components are whatever the built-in plugins register (a registry without third-party
entry points): no hand-kept list. Two tables below are kept by hand, each entry with its
reason: options the kit cannot guess for a few components, and the checks a built-in is known
to fail (``xfail(strict=True)``: a fix makes the entry an error until it is removed).
"""

from __future__ import annotations

import pytest

from wrapgrad.records import KINDS
from wrapgrad.registry import Registry
from wrapgrad.testing import Component, checks_for, parametrize_with_checks

# Captum's advice to explain one example at a time (Lime, KernelShap on the probe batch).
pytestmark = pytest.mark.filterwarnings("ignore:You are providing multiple inputs:UserWarning")

#: Options the kit cannot guess, by component.
OPTIONS: dict[str, dict[str, object]] = {
    # Attributes to the inputs (family "attribution") but through a layer's Grad-CAM.
    "explainer:guided_grad_cam": {"layer": "features.0"},
    # Quantus draws random classes in [0, num_classes), 1000 by default; the probe has 3.
    "metric:quantus_random_logit": {"num_classes": 3},
    # Quantus' default k = 1000 features; the probe's maps have 64.
    "metric:quantus_top_k_intersection": {"k": 8},
}

#: Known failures: component -> {check: reason}, or -> reason for every check that calls it.
#: Empty: every registered built-in passes every check that applies to it. (Quantus'
#: SensitivityN, which gives no score per sample, is not registered: the registry answers its
#: name with the reason, see tests/test_quantus_bridge.py.)
EXPECTED: dict[str, dict[str, str] | str] = {}


#: Checks that build a component but never call it.
_NO_CALL = ("check_spec", "check_builds", "check_explainer_traits")


def _builtins() -> list[Component]:
    registry = Registry(autoload=False)  # the wrapgrad distribution's own entry points only
    return [
        Component(spec=spec, options=OPTIONS.get(f"{kind}:{name}", {}))
        for kind in KINDS
        for name, spec in registry.specs(kind).items()
    ]


def _expected(component: Component) -> dict[str, str]:
    entry = EXPECTED.get(component.key, {})
    if isinstance(entry, str):
        return {c.name: entry for c in checks_for(component) if c.name not in _NO_CALL}
    return entry


COMPONENTS = _builtins()


def test_every_kind_with_components_is_checked() -> None:
    kinds = {c.kind for c in COMPONENTS}
    assert {"explainer", "enhancer", "perturber", "metric", "attack", "dataset"} <= kinds
    assert all(checks_for(c) for c in COMPONENTS)
    assert set(OPTIONS) <= {c.key for c in COMPONENTS}
    assert set(EXPECTED) <= {c.key for c in COMPONENTS}


@parametrize_with_checks(COMPONENTS, expected_failed_checks=_expected)
def test_builtin_conformance(component: Component, check) -> None:  # type: ignore[no-untyped-def]
    check(component)
