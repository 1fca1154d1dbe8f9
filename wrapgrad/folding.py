"""Eval-mode BatchNorm folded into the convolution before it, at every forward pass.

In evaluation mode a BatchNorm layer is an affine map per channel,
:math:`\\mathrm{BN}(z) = \\gamma (z - \\mu) / \\sqrt{\\sigma^2 + \\epsilon} + \\beta` with the
running statistics :math:`\\mu, \\sigma^2` (Ioffe & Szegedy 2015, Alg. 2, step 11). After a
convolution :math:`z = W * x + b` it can be folded into it:

.. math::

    \\mathrm{BN}(W * x + b) = (W s) * x + (b - \\mu) s + \\beta,
    \\qquad s = \\gamma / \\sqrt{\\sigma^2 + \\epsilon},

one convolution instead of a convolution and a normalisation, forward and backward. The
function is the same; only float rounding differs (a ReLU whose input lies within rounding of
0 may switch, and with it that unit's gradient).

:func:`fold_batchnorm` does the folding **at every forward pass, from the tensors the model
holds at that moment**: the folded weight :math:`W s` is computed from the current ``W``,
``γ``, ``β``, ``μ``, ``σ²``. So everything that evaluates a model with other tensors
(:func:`torch.func.functional_call`: NoiseGrad's weight samples, the engine's views) reaches
the original parameters under their original names, and NoiseGrad's noise on ``W`` and on
``γ``/``β`` is applied before the fold, as on the unfolded model (Bykov et al. 2022, Eq. 1).

What stays as it was:

* a pair whose BatchNorm is in training mode (batch statistics) runs unfolded, decided at each
  call; so does a pair with a hook on either layer (Captum's layer methods, LRP), or while any
  global module hook is set, so hooks always fire;
* the folded module has the model's parameters, buffers and sub-modules, the same objects under
  the same names in the same order (it never copies a weight), and it changes nothing on the
  model: it holds a traced copy of the model's forward code, run on the shared layers.

Measured (``docs/demo.md``): on the demo's ``small_resnet``, one global batch of its explain
step (Saliency and Integrated Gradients, Baseline / SmoothGrad / NoiseGrad / FusionGrad, one CPU
thread) took 0.84x the time; forward-only passes gain nothing measurable.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.fx
from torch import Tensor, nn
from torch.nn.modules import module as _module

from wrapgrad.errors import WrapgradTypeError, WrapgradValueError

__all__ = ["FoldedBatchNorm", "conv_bn", "fold_batchnorm"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _hooked(*modules: nn.Module) -> bool:
    """True if any module-level or global forward/backward hook could see these layers."""
    if (
        _module._global_forward_hooks
        or _module._global_forward_pre_hooks
        or _module._global_backward_hooks
        or _module._global_backward_pre_hooks
    ):
        return True
    return any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
        for m in modules
    )


def conv_bn(x: Tensor, conv: nn.Module, bn: nn.Module) -> Tensor:
    """``bn(conv(x))`` as one convolution with the folded weight and bias (module docstring),
    from the tensors the two layers hold now; unfolded when ``bn`` is in training mode or a hook
    is set on either layer."""
    if bn.training or _hooked(conv, bn):
        return bn(conv(x))
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    bias = -bn.running_mean * scale
    if bn.bias is not None:
        bias = bias + bn.bias
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    weight = conv.weight * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    return conv._conv_forward(x, weight, bias)


def _foldable(conv: Any, bn: Any) -> bool:
    """A non-transposed convolution followed by a BatchNorm over its output channels that keeps
    running statistics."""
    return (
        isinstance(conv, _CONVS)
        and isinstance(bn, _NORMS)
        and bn.track_running_stats
        and bn.running_var is not None
        and bn.num_features == conv.out_channels
    )


def _trace(model: nn.Module) -> Any:
    """``model``'s forward code as a :class:`torch.fx.GraphModule` (no copy of any layer).
    The tracer stores the tensors that forward creates on the module it traces: it traces a
    shallow copy (the same layers and tensors), so the model gains no attribute."""
    try:
        return torch.fx.symbolic_trace(copy.copy(model))
    except Exception as e:  # torch.fx raises many types for code it cannot trace
        raise WrapgradValueError(
            f"model: fold_batchnorm needs a forward pass torch.fx can trace (no control flow "
            f"on tensor values); tracing {type(model).__name__} failed: {type(e).__name__}: {e}"
        ) from e


def _fold_pairs(gm: Any) -> list[tuple[str, str]]:
    """Rewrite ``gm``'s graph: every call of a convolution whose only user is a BatchNorm call
    becomes one :func:`conv_bn` call; return the ``(conv, bn)`` names folded."""
    graph = gm.graph
    pairs = []
    for bn_node in list(graph.nodes):
        if bn_node.op != "call_module" or len(bn_node.args) != 1 or bn_node.kwargs:
            continue
        conv_node = bn_node.args[0]
        if (
            not isinstance(conv_node, torch.fx.Node)
            or conv_node.op != "call_module"
            or len(conv_node.users) != 1
            or len(conv_node.args) != 1
            or conv_node.kwargs
        ):
            continue
        conv = gm.get_submodule(conv_node.target)
        bn = gm.get_submodule(bn_node.target)
        if not _foldable(conv, bn):
            continue
        with graph.inserting_before(conv_node):
            conv_attr = graph.get_attr(conv_node.target)
            bn_attr = graph.get_attr(bn_node.target)
            fused = graph.call_function(conv_bn, (conv_node.args[0], conv_attr, bn_attr))
        bn_node.replace_all_uses_with(fused)
        graph.erase_node(bn_node)
        graph.erase_node(conv_node)
        pairs.append((conv_node.target, bn_node.target))
    graph.lint()
    gm.recompile()
    return pairs


class FoldedBatchNorm(nn.Module):
    """``model`` whose forward pass folds each eval-mode BatchNorm into the convolution before it
    (module docstring). Build it with :func:`fold_batchnorm`.

    Its parameters, buffers and sub-modules are the model's own (the same objects, names and
    order), so weight perturbers, ``functional_call`` and hook-based methods see the model.
    Set the model's mode on the model and fold again: ``train()``/``eval()`` on the folded
    module would change the user's layers, so only the mode it has is accepted.

    Attributes:
        model: the user's model (not registered as a sub-module: its layers are this module's).
        pairs: the ``(conv, bn)`` names folded.
    """

    model: nn.Module
    pairs: tuple[tuple[str, str], ...]

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise WrapgradTypeError(
                f"model: expected a torch.nn.Module, got {type(model).__name__}"
            )
        super().__init__()
        gm = _trace(model)
        pairs = tuple(_fold_pairs(gm))
        # The model's own layers, tensors and mode (new dicts, the same objects).
        self._modules = dict(model._modules)
        self._parameters = dict(model._parameters)
        self._buffers = dict(model._buffers)
        self.training = model.training
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "pairs", pairs)
        object.__setattr__(self, "_forward", type(gm).forward)
        # Constants the tracer made (tensors created in forward), kept unregistered.
        for node in gm.graph.nodes:
            head = node.target.split(".")[0] if node.op == "get_attr" else None
            if head is not None and not hasattr(model, head):
                object.__setattr__(self, head, getattr(gm, head))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.model.training != self.training:
            raise WrapgradValueError(
                "model: its mode changed since fold_batchnorm traced it (its forward code may "
                "depend on it); fold it again"
            )
        return self._forward(self, *args, **kwargs)

    def train(self, mode: bool = True) -> FoldedBatchNorm:
        if mode != self.training or any(m.training != mode for m in self.modules()):
            raise WrapgradValueError(
                f"mode: a folded model keeps the mode of the model it was built from; call "
                f"model.train({mode}) on the model itself and fold it again"
            )
        return self

    def extra_repr(self) -> str:
        return f"folded={len(self.pairs)} conv+BatchNorm pairs"


def fold_batchnorm(model: nn.Module) -> FoldedBatchNorm:
    """``model`` with each eval-mode BatchNorm folded into the convolution before it, at every
    forward pass, from the tensors the model holds then (module docstring). The same function up
    to float rounding; nothing of ``model`` is changed or copied.

    Example::

        fast = wrapgrad.fold_batchnorm(model.eval())
        explain = wrapgrad.wrap(fast, "saliency", enhancer="noisegrad", sigma=0.1, seed=0)

    Raises:
        WrapgradValueError: ``model``'s forward pass cannot be traced by :mod:`torch.fx`.
    """
    if isinstance(model, FoldedBatchNorm):
        return model
    return FoldedBatchNorm(model)
