"""The two entry points: :func:`parametrize_with_checks` (pytest) and :func:`check_component`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import attrs

from wrapgrad.errors import UnknownNameError, WrapgradTypeError
from wrapgrad.testing.checks import CHECKS, Check
from wrapgrad.testing.components import Component, as_component

__all__ = [
    "CheckResult",
    "ExpectedFailures",
    "check_component",
    "checks_for",
    "parametrize_with_checks",
]

#: ``{check name: reason}``, or a callable ``component -> {check name: reason}``, or a mapping
#: ``{"kind:name": {check name: reason}}``.
ExpectedFailures = (
    Mapping[str, str]
    | Mapping[str, Mapping[str, str]]
    | Callable[[Component], Mapping[str, str]]
    | None
)


def checks_for(component: Any) -> list[Check]:
    """The checks that apply to ``component`` (a spec, ``(kind, name)``, ... see
    :func:`~wrapgrad.testing.as_component`), in the order they run."""
    c = as_component(component)
    return [chk for chk in CHECKS if c.kind in chk.kinds and chk.applies(c)]


def _expected(component: Component, expected: ExpectedFailures) -> dict[str, str]:
    if expected is None:
        return {}
    if callable(expected):
        found = dict(expected(component) or {})
    elif any(isinstance(v, Mapping) for v in expected.values()):
        found = dict(expected.get(component.key, {}))  # type: ignore[arg-type]
    else:
        found = dict(expected)  # type: ignore[arg-type]
    names = {chk.name for chk in checks_for(component)}
    unknown = sorted(set(found) - names)
    if unknown:
        raise UnknownNameError(
            "expected_failed_checks", unknown[0], names, what=f"check of {component.key}"
        )
    for name, reason in found.items():
        if not isinstance(reason, str) or not reason.strip():
            raise WrapgradTypeError(
                f"expected_failed_checks: {component.key} {name}: give the reason as a string, "
                f"got {reason!r}"
            )
    return found


def _cases(
    components: Iterable[Any], expected: ExpectedFailures
) -> Iterator[tuple[Component, Check, str | None]]:
    for item in components:
        component = as_component(item)
        reasons = _expected(component, expected)
        for chk in checks_for(component):
            yield component, chk, reasons.get(chk.name)


def parametrize_with_checks(
    components: Iterable[Any], *, expected_failed_checks: ExpectedFailures = None
) -> Any:
    """Parametrize a pytest test over every (component, check) pair.

    Args:
        components: spec records, ``(kind, name)`` pairs, ``"kind:name"`` strings, ``(kind,
            factory)`` pairs or :class:`~wrapgrad.testing.Component` records.
        expected_failed_checks: the checks a component is known to fail, with the reason:
            ``{check: reason}`` for all components, ``{"kind:name": {check: reason}}``, or a
            callable ``component -> {check: reason}``. Those cases are marked
            ``xfail(strict=True)``: they must fail, and a fix turns them into an error until the
            entry is removed.

    Returns:
        A ``pytest.mark.parametrize`` over the arguments ``component`` and ``check``, with ids
        ``"<kind>:<name>-<check>"`` (``pytest -k "smoothgrad and seed"`` selects).

    Example::

        from wrapgrad.testing import parametrize_with_checks
        from my_plugin import LAPLACE_SPEC

        @parametrize_with_checks([LAPLACE_SPEC, ("metric", "my_metric")])
        def test_wrapgrad_conformance(component, check):
            check(component)
    """
    import pytest

    params = []
    for component, chk, reason in _cases(components, expected_failed_checks):
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        params.append(pytest.param(component, chk, marks=marks, id=f"{component.key}-{chk.name}"))
    return pytest.mark.parametrize(("component", "check"), params)


@attrs.frozen
class CheckResult:
    """What :func:`check_component` found for one check."""

    component: str
    """``"kind:name"``."""
    check: str
    status: str
    """``"passed"``, ``"failed"`` or ``"xfailed"`` (failed as declared)."""
    message: str = ""


def check_component(
    component: Any, *, expected_failed_checks: Mapping[str, str] | None = None
) -> list[CheckResult]:
    """Run every check that applies to ``component``, without pytest.

    Args:
        component: a spec record, ``(kind, name)``, ``"kind:name"``, ``(kind, factory)`` or a
            :class:`~wrapgrad.testing.Component`.
        expected_failed_checks: ``{check: reason}`` for checks known to fail.

    Returns:
        One :class:`CheckResult` per check, when all passed or failed as declared.

    Raises:
        AssertionError: naming every check that failed (or passed although declared to fail)
            and the component, with the first failure chained.

    Example::

        from wrapgrad.testing import check_component
        check_component(("enhancer", "smoothgrad"))
    """
    c = as_component(component)
    reasons = _expected(c, expected_failed_checks)
    results: list[CheckResult] = []
    first: AssertionError | None = None
    for chk in checks_for(c):
        try:
            chk(c)
        except AssertionError as exc:
            status = "xfailed" if chk.name in reasons else "failed"
            results.append(CheckResult(c.key, chk.name, status, str(exc)))
            if status == "failed" and first is None:
                first = exc
            continue
        if chk.name in reasons:
            results.append(
                CheckResult(
                    c.key,
                    chk.name,
                    "failed",
                    f"{chk.name} passed for {c.key}, but it is declared to fail "
                    f"({reasons[chk.name]}); remove it from expected_failed_checks",
                )
            )
        else:
            results.append(CheckResult(c.key, chk.name, "passed"))
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise AssertionError(
            f"{len(failed)} of {len(results)} checks failed for {c.key}:\n"
            + "\n".join(f"- {r.message}" for r in failed)
        ) from first
    return results
