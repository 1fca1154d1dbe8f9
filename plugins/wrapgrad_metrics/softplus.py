"""The softplus(β) twin of a ReLU network, built functionally.

A ReLU network is piecewise linear, so its input gradient is piecewise constant and the gradient
of a gradient map with respect to the input is zero almost everywhere: a first-order attack on a
Saliency map has nothing to follow. FAR (Ivankay et al. 2022, Sec. 4) therefore replaces the
second derivative of ReLU by that of softplus,

.. math:: \\mathrm{softplus}_\\beta(x) = \\tfrac{1}{\\beta}\\log(1 + e^{\\beta x}), \\qquad
          \\frac{d^2}{dx^2}\\mathrm{softplus}_\\beta(x) = \\beta\\,\\sigma(\\beta x)(1 - \\sigma(\\beta x)),

and softplus_β → ReLU as β → ∞. The user's modules are never swapped: :class:`SoftplusMode` is a
:class:`torch.overrides.TorchFunctionMode` that, while active, answers every ReLU call (``nn.ReLU``,
``F.relu``, ``torch.relu``, ``Tensor.relu`` and their in-place forms) with softplus(β).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from wrapgrad.errors import WrapgradValueError

__all__ = ["SoftplusMode", "softplus_twin"]


def _relu_functions() -> set[Any]:
    names = [
        (F, "relu"),
        (F, "relu_"),
        (torch, "relu"),
        (torch, "relu_"),
        (Tensor, "relu"),
        (Tensor, "relu_"),
    ]
    return {getattr(obj, name) for obj, name in names if hasattr(obj, name)}


class SoftplusMode(TorchFunctionMode):
    """While active, ReLU is computed as softplus(β) (in-place forms write the result back).

    Args:
        beta: the tightness β > 0 (FAR Table 2 uses β = 1).

    Example::

        with SoftplusMode(beta=10.0):
            logits = model(x)          # the softplus twin of model
    """

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
            raise WrapgradValueError(f"beta: expected a positive number, got {beta!r}")
        self.beta = float(beta)
        self._relus = _relu_functions()

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func in self._relus:
            x = args[0] if args else kwargs["input"]
            # In-place forms return a new tensor (writing into x would break the autograd graph
            # that second-order attacks differentiate through); modules use the return value.
            return F.softplus(x, beta=self.beta)
        return func(*args, **kwargs)


def softplus_twin(model: Callable[..., Tensor], beta: float = 1.0) -> Callable[..., Tensor]:
    """``model`` with every ReLU computed as softplus(β), as a plain function (the model itself
    is not changed; see :class:`SoftplusMode`)."""
    mode = SoftplusMode(beta)

    def forward(*args: Any, **kwargs: Any) -> Tensor:
        with SoftplusMode(mode.beta):
            return model(*args, **kwargs)

    forward.beta = mode.beta  # type: ignore[attr-defined]
    return forward
