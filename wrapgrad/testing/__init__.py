"""The conformance kit: does a component meet wrapgrad's contracts?

Modelled on scikit-learn's ``parametrize_with_checks``. A plugin author puts one test in their
own test suite::

    import wrapgrad.testing
    from my_plugin import LAPLACE_SPEC, PEARSON_SPEC

    @wrapgrad.testing.parametrize_with_checks(
        [LAPLACE_SPEC, PEARSON_SPEC, ("dataset", "my_data")],
        expected_failed_checks={"metric:pearson": {"check_metric_direction": "why"}},
    )
    def test_wrapgrad_conformance(component, check):
        check(component)

Each (component, check) pair is a test with the id ``"<kind>:<name>-<check>"``. Without
pytest, :func:`check_component` runs the same checks and raises an ``AssertionError`` naming
every failed check and the component. :func:`checks_for` lists what applies to a component;
``docs/plugins.md`` lists every check.

Checks run on a tiny seeded probe (a 1x8x8 ReLU CNN, a batch of three; see
:mod:`wrapgrad.testing.probes`), building components with their spec's ``smoke`` caps and each
call from what the component declares (an explainer's
:class:`~wrapgrad.records.ExplainerTraits`, a metric's ``requires``), so the whole kit takes
well under a second per component for the built-ins.
"""

from __future__ import annotations

from wrapgrad.testing.checks import CHECKS, Check
from wrapgrad.testing.components import Component, as_component
from wrapgrad.testing.runner import (
    CheckResult,
    check_component,
    checks_for,
    parametrize_with_checks,
)

__all__ = [
    "CHECKS",
    "Check",
    "CheckResult",
    "Component",
    "as_component",
    "check_component",
    "checks_for",
    "parametrize_with_checks",
]
