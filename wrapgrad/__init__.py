"""wrapgrad: trustworthy neural-network explanations for any PyTorch model.

Wrap a model and any Captum attribution method, optionally with an enhancer::

    import wrapgrad
    explain = wrapgrad.wrap(model, "integrated_gradients", enhancer="fusiongrad")
    attributions = explain(x, target=y)

Importing wrapgrad loads no plugin and imports neither Captum nor Quantus; the public names below
are resolved on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from wrapgrad.errors import (
    ModelMutatedError,
    PluginConflictError,
    PluginLoadError,
    UnknownNameError,
    WrapgradError,
    WrapgradTypeError,
    WrapgradValueError,
    WrapgradWarning,
)
from wrapgrad.registry import hookimpl

try:
    from importlib.metadata import version as _version

    __version__ = _version("wrapgrad")
except Exception:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "Explain",
    "ModelGuard",
    "ModelMutatedError",
    "Pipeline",
    "PluginConflictError",
    "PluginLoadError",
    "Registry",
    "TrainResult",
    "UnknownNameError",
    "WrapgradError",
    "WrapgradTypeError",
    "WrapgradValueError",
    "WrapgradWarning",
    "__version__",
    "attack",
    "attack_strength_curve",
    "calibrate",
    "fold_batchnorm",
    "get_registry",
    "hookimpl",
    "load_dataset",
    "metric",
    "plugins",
    "pretrained",
    "quantus_explain",
    "quantus_metric",
    "to_sde",
    "train",
    "use_registry",
    "wrap",
]

# name -> "module:attribute", imported on first access (PEP 562).
_LAZY = {
    "wrap": "wrapgrad.wrapping:wrap",
    "Explain": "wrapgrad.wrapping:Explain",
    "ModelGuard": "wrapgrad.guard:ModelGuard",
    "get_registry": "wrapgrad.registry:get_registry",
    "use_registry": "wrapgrad.registry:use_registry",
    "load_dataset": "wrapgrad.catalog:load_dataset",
    "pretrained": "wrapgrad.catalog:pretrained",
    "Registry": "wrapgrad.registry:Registry",
    "calibrate": "wrapgrad.calibration:calibrate",
    "fold_batchnorm": "wrapgrad.folding:fold_batchnorm",
    "metric": "wrapgrad.evaluation:metric",
    "attack": "wrapgrad.evaluation:attack",
    # Deprecated aliases of names that moved into plugins (resolved through the registry).
    "quantus_explain": "wrapgrad.moved:quantus_explain",
    "quantus_metric": "wrapgrad.moved:quantus_metric",
    "Pipeline": "wrapgrad.moved:Pipeline",
    "attack_strength_curve": "wrapgrad.evaluation:attack_strength_curve",
    "to_sde": "wrapgrad.sde.convert:to_sde",
    "train": "wrapgrad.training:train",
    "TrainResult": "wrapgrad.training:TrainResult",
}


def plugins() -> list[Any]:
    """What is installed: one :class:`~wrapgrad.records.PluginInfo` per component (name, kind,
    plugin, providing distribution and version, summary), then one per broken plugin
    (``kind == "broken"``, with its ``error``)."""
    from wrapgrad.registry import get_registry

    return get_registry().plugins()


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'wrapgrad' has no attribute {name!r}")
    module, attr = target.split(":")
    value = getattr(importlib.import_module(module), attr)
    if module != "wrapgrad.moved":  # deprecated aliases warn on every access
        globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:
    from wrapgrad.folding import fold_batchnorm
    from wrapgrad.guard import ModelGuard
    from wrapgrad.registry import Registry, get_registry
    from wrapgrad.training import TrainResult, train
    from wrapgrad.wrapping import Explain, wrap
