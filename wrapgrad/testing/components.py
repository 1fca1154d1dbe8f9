"""What the kit checks: a :class:`Component`, a spec record with the options to build it.

Anything :func:`as_component` accepts can be handed to the kit:

* a spec record (``EnhancerSpec(...)``, ``MetricSpec(...)``, ...);
* a registered name with its kind, ``("enhancer", "smoothgrad")`` or ``"enhancer:smoothgrad"``
  (looked up in the current registry, see :func:`wrapgrad.registry.get_registry`);
* a kind with a factory, ``("enhancer", MyEnhancer)`` (a spec named after the factory);
* a :class:`Component`, for options of your own (``Component(spec, options={"k": 3})``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import attrs

from wrapgrad.errors import WrapgradTypeError
from wrapgrad.records import KINDS, Spec, normalize_name
from wrapgrad.registry import get_registry

__all__ = ["Component", "as_component"]


@attrs.frozen(kw_only=True)
class Component:
    """A spec and the options the kit builds it with.

    The kit builds ``spec.factory(**options)`` where ``options`` are the spec's ``smoke`` caps
    (what a ``--smoke`` run keeps: the component's own cheap settings) overridden by
    :attr:`options`; a check that needs other settings (zero noise, another seed) adds them on
    top.
    """

    spec: Spec = attrs.field(validator=attrs.validators.instance_of(Spec))
    """The component's spec record."""
    options: dict[str, Any] = attrs.field(factory=dict, converter=dict)
    """Options the kit builds it with, over the spec's ``smoke`` caps."""
    zero_options: dict[str, Any] | None = attrs.field(default=None)
    """Perturbers: the options that switch the noise off (``is_zero``). None: every option
    whose default is a positive number, set to 0."""

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def key(self) -> str:
        """``"kind:name"``: how ids, messages and ``expected_failed_checks`` name it."""
        return f"{self.kind}:{self.name}"

    def build_options(self, **overrides: Any) -> dict[str, Any]:
        """The options :meth:`build` passes: the smoke caps the factory takes (not for
        calibrators, whose caps are call options: :meth:`call_options`), ``seed=0`` for a
        metric or attack that takes a seed (so the checks are repeatable), :attr:`options`,
        then ``overrides``."""
        names, open_ = self.spec.option_names()
        options: dict[str, Any] = {}
        if self.kind != "calibrator":
            options = {k: v for k, v in self.spec.smoke_caps().items() if open_ or k in names}
        if self.kind in ("metric", "attack") and "seed" in names:
            options.setdefault("seed", 0)
        return {**options, **self.options, **overrides}

    def call_options(self) -> dict[str, Any]:
        """Calibrators: the options of a call (the spec's smoke caps)."""
        return self.spec.smoke_caps() if self.kind == "calibrator" else {}

    def build(self, **overrides: Any) -> Any:
        """``spec.factory(**build_options(**overrides))``."""
        return self.spec.factory(**self.build_options(**overrides))

    def __str__(self) -> str:
        return self.key


def _spec_name(factory: Callable[..., Any]) -> str:
    raw = getattr(factory, "name", None)
    if not isinstance(raw, str):
        raw = getattr(factory, "__name__", type(factory).__name__)
    return normalize_name(re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", raw))


def as_component(item: Any) -> Component:
    """``item`` as a :class:`Component` (see the module docstring for what it may be)."""
    if isinstance(item, Component):
        return item
    if isinstance(item, Spec):
        return Component(spec=item)
    if isinstance(item, str) and ":" in item:
        item = tuple(item.split(":", 1))
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
        kind, what = item
        if kind not in KINDS:
            from wrapgrad.errors import UnknownNameError

            raise UnknownNameError("kind", kind, KINDS, what="component kind")
        if isinstance(what, str):
            return Component(spec=get_registry().get(kind, what, argument="component"))
        if callable(what):
            spec_cls = KINDS[kind][0]
            return Component(spec=spec_cls(name=_spec_name(what), factory=what))
    raise WrapgradTypeError(
        "component: expected a spec record, a Component, (kind, name), 'kind:name' or "
        f"(kind, factory), got {item!r}"
    )
