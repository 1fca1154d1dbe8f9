"""The conformance checks, one module per kind of component; importing this package fills
:data:`~wrapgrad.testing.checks._base.CHECKS`."""

from __future__ import annotations

from wrapgrad.testing.checks import (  # noqa: F401 - imported for their @check registrations
    attacks,
    calibrators,
    catalog,
    enhancers,
    explainers,
    metrics,
    objectives,
    perturbers,
    spec,
)
from wrapgrad.testing.checks._base import CHECKS, Check

# The spec checks first: a component whose spec is wrong fails there before anything else.
CHECKS.sort(key=lambda c: c.name not in ("check_spec", "check_builds"))

__all__ = ["CHECKS", "Check"]
