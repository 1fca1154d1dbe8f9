"""The model as the explainer sees it in one chunk: the user's module, a functional view with
one weight sample, or a stack of weight samples under ``vmap`` (:class:`StackedView`).

Weights are never copied into the model and never edited: weight samples are tensors evaluated
with :func:`torch.func.functional_call`. In training mode the buffers (BatchNorm running
statistics) are replaced by per-call copies (:func:`buffer_copies`), so no update reaches the
user's model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from wrapgrad.errors import WrapgradTypeError, WrapgradValueError
from wrapgrad.functional import FunctionalView

__all__ = ["StackedView", "buffer_copies", "in_training", "model_view"]


def in_training(model: nn.Module) -> bool:
    """True if any module of ``model`` is in training mode."""
    return any(m.training for m in model.modules())


def buffer_copies(model: nn.Module, k: int | None) -> dict[str, Tensor]:
    """Copies of the model's buffers (stacked ``k`` times if ``k``), for training-mode runs."""
    out = {}
    for name, b in model.named_buffers():
        b = b.detach()
        out[name] = b.clone() if k is None else b.unsqueeze(0).expand(k, *b.shape).clone()
    return out


def model_view(
    model: nn.Module,
    tensors: dict[str, Tensor],
    training: bool,
    tied: dict[str, tuple[str, ...]] | None = None,
) -> nn.Module:
    """``model`` evaluated with ``tensors`` (one weight sample; may be empty), with per-call
    buffer copies in training mode; the model itself when there is nothing to replace.
    ``tied``: the model's :func:`~wrapgrad.functional.tied_names`, computed once per call."""
    if training:
        tensors = {**tensors, **buffer_copies(model, None)}
    return FunctionalView(model, tensors, tied=tied) if tensors else model


class StackedView(nn.Module):
    """``k`` weight samples of one model as one module on a ``k``-fold batch, via ``vmap``.

    ``view(x)`` with ``x`` of ``k · unit · s`` rows evaluates sample ``i`` of the stack on its
    share of the rows and returns the outputs in the rows' order. ``unit`` is the rows per
    weight sample in the batch the engine built; explainers may expand it ``s``-fold (Integrated
    Gradients' steps, ``layout="block"``: ``torch.cat([batch] * s)``; NoiseTunnel inside
    GradientShap, ``layout="interleave"``: ``repeat_interleave(s)``).

    Args:
        model: the user's model (registered as a sub-module, never changed).
        stacks: name -> ``(k, *shape)`` parameter (and, in training mode, buffer) samples.
        k: the number of weight samples.
        unit: rows per weight sample.
        layout: ``"block"`` or ``"interleave"``.
    """

    def __init__(
        self, model: nn.Module, stacks: dict[str, Tensor], k: int, unit: int, layout: str
    ) -> None:
        super().__init__()
        self.model = model
        self.stacks = stacks
        self.k = k
        self.unit = unit
        self.layout = layout
        self.training = model.training

    def _split(self, a: Tensor, s: int) -> Tensor:
        rest = a.shape[1:]
        if self.layout == "interleave" or s == 1:
            return a.reshape(self.k, self.unit * s, *rest)
        return (
            a.reshape(s, self.k, self.unit, *rest)
            .transpose(0, 1)
            .reshape(self.k, s * self.unit, *rest)
        )

    def _merge(self, out: Tensor, s: int) -> Tensor:
        rest = out.shape[2:]
        total = self.k * self.unit * s
        if self.layout == "interleave" or s == 1:
            return out.reshape(total, *rest)
        return out.reshape(self.k, s, self.unit, *rest).transpose(0, 1).reshape(total, *rest)

    def forward(self, *args: Any) -> Tensor:
        first = next((a for a in args if isinstance(a, Tensor) and a.dim() > 0), None)
        if first is None:
            raise WrapgradValueError("StackedView: expected a batch tensor among the arguments")
        total = first.shape[0]
        base = self.k * self.unit
        if total % base:
            raise WrapgradValueError(
                f"strategy: 'vmap' got a batch of {total} rows, not a multiple of the "
                f"{base} rows it was built for (the method regroups the batch); use "
                f"strategy='loop'"
            )
        s = total // base
        dims = []
        batched = []
        for a in args:
            if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == total:
                batched.append(self._split(a, s))
                dims.append(0)
            else:
                batched.append(a)
                dims.append(None)
        model = self.model

        def one(tensors: dict[str, Tensor], *xs: Any) -> Tensor:
            return torch.func.functional_call(model, tensors, xs, tie_weights=True, strict=False)

        out = torch.func.vmap(one, in_dims=(0, *dims), randomness="different")(
            self.stacks, *batched
        )
        if not isinstance(out, Tensor):
            raise WrapgradTypeError(
                f"model: expected the forward pass to return a tensor, got {type(out).__name__}"
            )
        return self._merge(out, s)
