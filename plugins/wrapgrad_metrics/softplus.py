"""The softplus(β) twin of a ReLU network, built functionally.

A ReLU network is piecewise linear, so its input gradient is piecewise constant and the gradient
of a gradient map with respect to the input is zero almost everywhere: a first-order attack on a
Saliency map has nothing to follow. FAR (Ivankay et al. 2022, Sec. 4) therefore replaces the
second derivative of ReLU by that of softplus,

.. math:: \\mathrm{softplus}_\\beta(x) = \\tfrac{1}{\\beta}\\log(1 + e^{\\beta x}), \\qquad
          \\frac{d^2}{dx^2}\\mathrm{softplus}_\\beta(x) = \\beta\\,\\sigma(\\beta x)(1 - \\sigma(\\beta x)),

and softplus_β → ReLU as β → ∞. The user's modules are never swapped: :class:`SoftplusMode` is a
:class:`~wrapgrad.differentiable.ReLUReplacementMode` (a :class:`torch.overrides.TorchFunctionMode`,
the skeleton :class:`~wrapgrad.differentiable.FarReLUMode` shares) that, while active, answers
every ReLU call (``nn.ReLU``, ``F.relu``, ``torch.relu``, ``Tensor.relu`` and their in-place
forms, which write softplus(β) into their input as ``relu_`` writes ReLU) with softplus(β).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from wrapgrad.differentiable import ReLUReplacementMode
from wrapgrad.errors import WrapgradValueError

__all__ = ["SoftplusMode", "softplus_twin"]


class _SoftplusInplace(torch.autograd.Function):
    """softplus(β) written into its input, as ``relu_`` writes ReLU into it.

    Softplus' own backward needs its input, which the in-place write destroys; its derivative is
    written with the output instead, :math:`\\sigma(\\beta x) = 1 - e^{-\\beta\\,\\mathrm{sp}(x)}`,
    built from differentiable operations so that second derivatives (what IFIA follows) are
    :math:`\\beta\\sigma(\\beta x)(1 - \\sigma(\\beta x))` as for the out-of-place form.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, beta: float) -> Tensor:
        with torch.no_grad():
            x.copy_(F.softplus(x, beta=beta))
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        ctx.beta = beta
        return x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (out,) = ctx.saved_tensors
        return grad * -torch.expm1(-ctx.beta * out), None


class SoftplusMode(ReLUReplacementMode):
    """While active, ReLU is computed as softplus(β) (in-place forms write it into their input).

    Args:
        beta: the tightness β > 0 (FAR Table 2 uses β = 1).

    >>> with SoftplusMode(beta=10.0):  # softplus(10 x) / 10 at 0 is log(2) / 10
    ...     twin = torch.relu(torch.zeros(1))
    >>> round(twin.item(), 4), torch.relu(torch.zeros(1)).item()
    (0.0693, 0.0)
    """

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
            raise WrapgradValueError(f"beta: expected a positive number, got {beta!r}")
        self.beta = float(beta)

    def replace(self, x: Tensor, inplace: bool) -> Tensor:
        if not inplace:
            return F.softplus(x, beta=self.beta)
        if torch.is_grad_enabled() and x.requires_grad:
            return _SoftplusInplace.apply(x, self.beta)
        with torch.no_grad():
            return x.copy_(F.softplus(x, beta=self.beta))


def softplus_twin(model: Callable[..., Tensor], beta: float = 1.0) -> Callable[..., Tensor]:
    """``model`` with every ReLU computed as softplus(β), as a plain function (the model itself
    is not changed; see :class:`SoftplusMode`)."""
    mode = SoftplusMode(beta)

    def forward(*args: Any, **kwargs: Any) -> Tensor:
        with SoftplusMode(mode.beta):
            return model(*args, **kwargs)

    forward.beta = mode.beta  # type: ignore[attr-defined]
    return forward
