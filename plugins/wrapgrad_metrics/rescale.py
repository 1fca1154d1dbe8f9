"""DeepLIFT's Rescale rule written with torch operations, so that its map can be differentiated
with respect to the input (the surrogate that drives the S_r and IFIA ascents for ``deep_lift``).

Captum's ``DeepLift`` (Shrikumar et al. 2017) runs the network once on ``cat([x, b])`` (the
inputs and their baselines) and, in the backward pass, replaces each ReLU's derivative by the
*multiplier* of the Rescale rule,

.. math::
    m = \\frac{\\Delta y}{\\Delta x} = \\frac{\\mathrm{relu}(x) - \\mathrm{relu}(x_{\\mathrm{ref}})}
                                          {x - x_{\\mathrm{ref}}}
    \\quad (|x - x_{\\mathrm{ref}}| \\ge 10^{-10};\\ \\text{else the ReLU's own derivative}),

where ``x`` and ``x_ref`` are the ReLU's pre-activations on the input and on its baseline; the
map is :math:`(x - b) \\odot \\partial^{m} f_t / \\partial x` (the gradient with multipliers,
``multiply_by_inputs=True``). Captum detaches that map. Here the multiplier is the backward of a
custom autograd function (:class:`_RescaleReLU`) computed from its saved pre-activations with
differentiable operations, so with ``create_graph=True`` the map keeps a graph to ``x``: where a
unit's input and reference have opposite signs, :math:`m = x/(x - x_{\\mathrm{ref}})` (or
:math:`-x_{\\mathrm{ref}}/(x - x_{\\mathrm{ref}})`) changes with ``x``, and the factor
:math:`x - b` does everywhere, so unlike a ReLU network's gradient map this map has a non-zero
input gradient without a softplus twin.

Which ReLUs: every ReLU call that :class:`~wrapgrad.differentiable.ReLUReplacementMode` catches
(``nn.ReLU``, ``F.relu``, ``torch.relu``, ``Tensor.relu``, in-place forms). Captum rescales
``nn.ReLU`` modules only (and has rules for max-pooling, sigmoid, tanh, softmax, ...): on
networks whose nonlinearities are ``nn.ReLU`` modules (the embedded ``small_cnn`` without its
max-pooling, ``small_resnet`` and its neural SDEs) the two maps agree to rounding; elsewhere this
map is an approximation, which only steers the ascent (reported values are measured with the
explainer itself).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from wrapgrad.differentiable import ReLUReplacementMode, select_outputs

__all__ = ["RescaleMode", "deep_lift_rescale"]

#: Captum's threshold below which a unit's difference-from-reference counts as zero.
EPS = 1e-10


class _RescaleReLU(torch.autograd.Function):
    """``relu`` on a ``cat([inputs, references])`` batch whose derivative is Rescale's
    multiplier (the same multiplier for a row and its reference row, as Captum's hook gives)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        x_in, x_ref = x.chunk(2)
        delta_in = x_in - x_ref
        delta_out = x_in.clamp_min(0) - x_ref.clamp_min(0)
        small = delta_in.abs() < EPS
        safe = torch.where(small, torch.ones_like(delta_in), delta_in)
        multiplier = torch.cat(2 * [delta_out / safe])
        own = (x > 0).to(grad.dtype)
        return grad * torch.where(torch.cat(2 * [small]), own, multiplier)


class RescaleMode(ReLUReplacementMode):
    """While active, every ReLU call is :class:`_RescaleReLU` (the forward values are ReLU's;
    the batch must be laid out as ``cat([inputs, references])``)."""

    def replace(self, x: Tensor, inplace: bool) -> Tensor:
        if not inplace:
            return _RescaleReLU.apply(x)
        return x.copy_(_RescaleReLU.apply(x.clone()))


def deep_lift_rescale(
    model: Callable[..., Tensor],
    inputs: Tensor,
    target: Any,
    *,
    baselines: Tensor | float = 0.0,
    multiply_by_inputs: bool = True,
    create_graph: bool = True,
) -> Tensor:
    """DeepLIFT's Rescale map of ``model`` (Captum's ``DeepLift`` on ReLU networks), with a graph
    to ``inputs`` when ``create_graph``.

    Args:
        model: ``model(x) -> outputs``, run once on ``cat([inputs, baselines])``.
        inputs: a batch ``(B, ...)``; differentiated as it is if it requires grad.
        target: Captum's target forms (:func:`~wrapgrad.differentiable.select_outputs`).
        baselines: a number, a tensor broadcastable to one row, or one per row (default 0).
        multiply_by_inputs: ``(x - b) * multipliers`` (Captum's default) or the multipliers.
        create_graph: keep the graph (False: a detached map).
    """
    x = inputs if inputs.requires_grad else inputs.detach().requires_grad_(True)
    b = torch.as_tensor(baselines, dtype=x.dtype, device=x.device).detach().expand_as(x)
    with torch.enable_grad(), RescaleMode():
        out = model(torch.cat([x, b]))
        picked = select_outputs(out[: x.shape[0]], target)
    (grad,) = torch.autograd.grad(picked.sum(), x, create_graph=create_graph)
    maps = (x - b) * grad if multiply_by_inputs else grad
    return maps if create_graph else maps.detach()
