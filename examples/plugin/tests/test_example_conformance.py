"""The plugin passes wrapgrad's conformance kit: one test, every component it contributes."""

from __future__ import annotations

import wrapgrad_example_plugin as plugin

from wrapgrad.testing import parametrize_with_checks


@parametrize_with_checks(plugin.specs())
def test_wrapgrad_conformance(component, check) -> None:  # type: ignore[no-untyped-def]
    check(component)
