"""Names that moved out of the core into built-in plugins, kept as deprecated aliases.

``wrapgrad.Pipeline`` is now ``wrapgrad_pipeline.Pipeline``; ``wrapgrad.quantus_explain`` and
``wrapgrad.quantus_metric`` are ``wrapgrad_quantus``'s. Each alias is resolved through the
registry (:meth:`wrapgrad.registry.Registry.plugin`), never by importing the plugin (the core
imports no plugin), and warns once with a :class:`DeprecationWarning` naming the new import.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["MOVED"]

#: Old name -> (plugin entry point, package to import it from).
MOVED = {
    "Pipeline": ("pipeline", "wrapgrad_pipeline"),
    "quantus_explain": ("quantus", "wrapgrad_quantus"),
    "quantus_metric": ("quantus", "wrapgrad_quantus"),
}


def __getattr__(name: str) -> Any:
    if name not in MOVED:
        raise AttributeError(f"module 'wrapgrad.moved' has no attribute {name!r}")
    from wrapgrad.registry import get_registry

    plugin, package = MOVED[name]
    warnings.warn(
        f"wrapgrad.{name} is deprecated and will be removed; use `from {package} import {name}`",
        DeprecationWarning,
        stacklevel=3,  # the caller of wrapgrad.<name>
    )
    return getattr(get_registry().plugin(plugin), name)
