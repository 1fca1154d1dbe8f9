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

__all__ = [
    "FunctionalView",
    "ModelGuard",
    "ModelSnapshot",
    "model_device",
    "tied_names",
    "untie",
]


def model_device(model: Callable[..., Any]) -> torch.device | None:
    """The device of a module's first parameter or buffer (None if it has neither)."""
    if isinstance(model, nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return None


def tied_names(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """Tied tensors of ``model``: each name of a parameter or buffer registered under several
    names (shared weights, e.g. an embedding and a decoder) -> all of its names. Empty for a
    model without tied tensors."""
    names: dict[int, list[str]] = {}
    for name, t in (
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ):
        names.setdefault(id(t), []).append(name)
    return {n: tuple(group) for group in names.values() if len(group) > 1 for n in group}


def untie(tensors: Mapping[str, Tensor], tied: Mapping[str, tuple[str, ...]]) -> dict[str, Tensor]:
    """``tensors`` with each tied name's tensor also under the other names of its tensor (what
    ``functional_call(..., tie_weights=True)`` does at every call), given ``tied_names(model)``."""
    out = dict(tensors)
    for name, value in tensors.items():
        for other in tied.get(name, ()):
            out.setdefault(other, value)
    return out


class FunctionalView(nn.Module):
    """The user's model evaluated with other parameter/buffer tensors, without touching it.

    ``FunctionalView(model, params)(x)`` is ``torch.func.functional_call(model, params, (x,))``
    (tied weights stay tied). The model is registered as a sub-module so that hook-based
    attribution methods (DeepLift, GuidedBackprop, layer methods) find its layers; the view
    itself holds no parameters.

    Args:
        model: the user's model.
        tensors: replacement tensors by qualified name (parameters and/or buffers); names not
            given keep the model's own tensors.
        tied: ``tied_names(model)``, when the caller has it (the engine computes it once per
            call, not once per weight sample): the tensors are then untied here, once, instead
            of by ``functional_call`` at every forward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        tensors: Mapping[str, Tensor] | None = None,
        *,
        tied: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.tensors = dict(tensors or {})
        self.untied = tied is not None
        if tied is not None:
            self.tensors = untie(self.tensors, tied)
        self.training = model.training

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.tensors:
            return self.model(*args, **kwargs)
        return torch.func.functional_call(
            self.model, self.tensors, args, kwargs, tie_weights=not self.untied, strict=False
        )
