"""Functional views of a model: the user's model evaluated with other tensors, never edited.

The model-unchanged guard lives in :mod:`wrapgrad.guard` (``ModelGuard`` and ``ModelSnapshot``
are re-exported here for older imports).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from wrapgrad.guard import ModelGuard, ModelSnapshot

__all__ = ["FunctionalView", "ModelGuard", "ModelSnapshot", "model_device"]


def model_device(model: Callable[..., Any]) -> torch.device | None:
    """The device of a module's first parameter or buffer (None if it has neither)."""
    if isinstance(model, nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return None


class FunctionalView(nn.Module):
    """The user's model evaluated with other parameter/buffer tensors, without touching it.

    ``FunctionalView(model, params)(x)`` is ``torch.func.functional_call(model, params, (x,))``.
    The model is registered as a sub-module so that hook-based attribution methods (DeepLift,
    GuidedBackprop, layer methods) find its layers; the view itself holds no parameters.

    Args:
        model: the user's model.
        tensors: replacement tensors by qualified name (parameters and/or buffers); names not
            given keep the model's own tensors.
    """

    def __init__(self, model: nn.Module, tensors: Mapping[str, Tensor] | None = None) -> None:
        super().__init__()
        self.model = model
        self.tensors = dict(tensors or {})
        self.training = model.training

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.tensors:
            return self.model(*args, **kwargs)
        return torch.func.functional_call(
            self.model, self.tensors, args, kwargs, tie_weights=True, strict=False
        )
