"""Predictions shared between Quantus metric calls: :class:`MemoModel`.

Several Quantus metrics evaluate the model on perturbed inputs that do not depend on the
explanation: FaithfulnessCorrelation's masked copies depend only on the inputs and the random
subsets (drawn from numpy's global RNG, which :class:`~wrapgrad_quantus.QuantusMetric` seeds the
same for every call). Scoring several explanations of the same inputs with the same seed then
repeats every forward pass. A :class:`MemoModel` remembers them: a no-gradient, evaluation-mode
forward of the model on an input it has seen, with its parameters and buffers unchanged (same
tensors, same version counters), returns the remembered output. Anything else (gradients on,
training mode, other arguments) goes straight to the model, so the result is always what the
model would compute; a copy Quantus makes (``deepcopy`` for randomisation) is another model
with its own memory.
"""

from __future__ import annotations

import hashlib
import weakref
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["MemoModel", "unwrap"]

#: Remembered outputs by model (gone with the model), then by (state, input) key.
_MEMORY: weakref.WeakKeyDictionary[nn.Module, dict[Any, Tensor]] = weakref.WeakKeyDictionary()
#: Outputs kept per model (the oldest go first).
MAX_ENTRIES = 4096


def _state(model: nn.Module) -> tuple[Any, ...]:
    """The identity and version of every parameter and buffer: an in-place change (or a new
    tensor) is a new state."""
    return tuple(
        (name, id(t), t._version) for name, t in (*model.named_parameters(), *model.named_buffers())
    )


def _content(x: Tensor) -> tuple[Any, ...]:
    data = x.detach().contiguous().cpu().numpy().tobytes()
    return (tuple(x.shape), str(x.dtype), str(x.device), hashlib.blake2b(data).hexdigest())


class MemoModel(nn.Module):
    """``model`` (a submodule, so Quantus sees its layers) with its no-gradient evaluation-mode
    outputs remembered by input content (see the module docstring). Its ``training`` flag is
    the model's; nothing of the model is changed."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.training = model.training  # the flag only, not model.train(...)
        self.hits = 0
        self.misses = 0

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        model = self.model
        if args or kwargs or not isinstance(x, Tensor) or torch.is_grad_enabled() or model.training:
            return model(x, *args, **kwargs)
        memory = _MEMORY.setdefault(model, {})
        key = (_state(model), _content(x))
        if key in memory:
            self.hits += 1
            return memory[key].clone()
        self.misses += 1
        out = model(x)
        if isinstance(out, Tensor):
            if len(memory) >= MAX_ENTRIES:
                memory.pop(next(iter(memory)))
            memory[key] = out.detach().clone()
        return out

    def __repr__(self) -> str:
        return f"MemoModel({type(self.model).__name__})"


def unwrap(model: Any) -> Any:
    """The model a :class:`MemoModel` wraps; anything else as it is."""
    return model.model if isinstance(model, MemoModel) else model
