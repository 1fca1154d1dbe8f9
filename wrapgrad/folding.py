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
  call; so does a pair with a hook on either layer (Captum's layer methods, LRP);
* the whole model runs as it is, unfolded, while a hook is set on it or on a module the trace
  went through (a block, a ``Sequential``: Grad-CAM's usual layers), or any global module hook,
  or while any module's mode differs from the mode it had when it was folded; so hooks always
  fire and mode-dependent code always sees the current mode;
* the folded module is a view of the model: the same parameter, buffer and sub-module
  dictionaries (the same objects under the same names in the same order; it never copies a
  weight), with another forward. Tracing changes nothing on the model (it traces shadow copies
  of the model and its blocks, sharing the layers). What is done to the view (``train()``,
  ``to()``) is done to the model's layers.

Measured (``docs/demo.md``): on the demo's ``small_resnet``, one global batch of its explain
step (Saliency and Integrated Gradients, Baseline / SmoothGrad / NoiseGrad / FusionGrad, one CPU
thread) took 0.84x the time; forward-only passes gain nothing measurable.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import torch
import torch.fx
from torch import Tensor, nn
from torch.nn.modules import module as _module

from wrapgrad.errors import WrapgradTypeError, WrapgradValueError

__all__ = ["FoldedBatchNorm", "conv_bn", "fold_batchnorm"]


def _hooked(*modules: nn.Module) -> bool:
    """True if any module-level or global forward/backward hook could see these modules."""
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
    from the tensors the two layers hold now; unfolded when ``bn`` is in training mode, a hook is
    set on either layer, or ``x`` is not a batch of the convolution's rank."""
    if bn.training or _hooked(conv, bn) or x.dim() != conv.weight.dim():
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
    dtype = conv.weight.dtype
    return conv._conv_forward(x, weight.to(dtype), bias.to(dtype))


_PAIRS = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}


def _foldable(conv: Any, bn: Any) -> bool:
    """A convolution of rank N followed by a BatchNormNd over its output channels that keeps
    running statistics."""
    norm = _PAIRS.get(type(conv))
    return (
        norm is not None
        and type(bn) is norm
        and bn.track_running_stats
        and bn.running_var is not None
        and bn.num_features == conv.out_channels
    )


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, which goes through non-leaf modules without running their hooks
    (those are checked at each call instead) and notes which modules it went through."""

    def __init__(self) -> None:
        super().__init__()
        self.through: list[str] = []

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        # a folded model inside the model folds its own layers
        return isinstance(m, FoldedBatchNorm) or super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        if self.is_leaf_module(m, self.path_of_module(m)):
            return super().call_module(m, forward, args, kwargs)
        self.through.append(self.path_of_module(m))
        return m.forward(*args, **kwargs)


def _shadow(module: nn.Module, is_leaf: Any) -> nn.Module:
    """A copy of ``module`` and of every non-leaf module below it (new attribute dictionaries,
    so what forward code sets on ``self`` while traced lands on the copies), sharing the leaf
    layers and every tensor."""
    copy_ = copy.copy(module)
    copy_._modules = {
        name: (child if child is None or is_leaf(child, name) else _shadow(child, is_leaf))
        for name, child in module._modules.items()
    }
    return copy_


def _trace(model: nn.Module) -> tuple[Any, tuple[str, ...]]:
    """``model``'s forward code as a :class:`torch.fx.GraphModule`, and the names of the
    modules the trace went through (the model itself changes in nothing)."""
    tracer = _Tracer()
    shadow = _shadow(model, lambda m, name: tracer.is_leaf_module(m, name))
    try:
        with _TRACING:  # torch.fx's patcher is one per process
            graph = tracer.trace(shadow)
    except Exception as e:  # torch.fx raises many types for code it cannot trace
        raise WrapgradValueError(
            f"model: fold_batchnorm needs a forward pass torch.fx can trace (no control flow "
            f"on tensor values); tracing {type(model).__name__} failed: {type(e).__name__}: {e}"
        ) from e
    return torch.fx.GraphModule(shadow, graph), tuple(dict.fromkeys(tracer.through))


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


#: What :meth:`FoldedBatchNorm._fold` derives from the model (left out of its pickled state).
_TRACED = ("_forward", "_through", "_through_names", "_modes", "pairs")
_TRACING = threading.Lock()


class FoldedBatchNorm(nn.Module):
    """``model`` whose forward pass folds each eval-mode BatchNorm into the convolution before it
    (module docstring). Build it with :func:`fold_batchnorm`.

    A view of the model: its parameter, buffer and sub-module dictionaries are the model's own
    (the same objects, names and order), so weight perturbers, ``functional_call`` and hook-based
    methods see the model, and ``train()``/``to()`` on the view act on the model's layers. It
    deep-copies (sharing the traced code) and pickles (unpickling traces again). Fold in one
    thread while no other runs the model: torch.fx patches ``nn.Module.__call__`` for every
    thread while it traces.

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
        # The model's own dictionaries: a view, not a copy.
        self._modules = model._modules
        self._parameters = model._parameters
        self._buffers = model._buffers
        self._non_persistent_buffers_set = model._non_persistent_buffers_set
        self.training = model.training
        object.__setattr__(self, "model", model)
        self._fold()

    def _fold(self) -> None:
        model = self.model
        gm, through = _trace(model)
        pairs = tuple(_fold_pairs(gm))
        object.__setattr__(self, "pairs", pairs)
        object.__setattr__(self, "_forward", type(gm).forward)
        object.__setattr__(self, "_through_names", through)
        object.__setattr__(self, "_modes", self._current_modes())
        self._find_through()
        # Attributes the traced code reads that are not layers or registered tensors: tensors
        # the tracer made from forward's constants, plain tensor attributes of the model.
        registered = {*self._modules, *self._parameters, *self._buffers}
        for node in gm.graph.nodes:
            head = node.target.split(".")[0] if node.op == "get_attr" else None
            if head is not None and head not in registered:
                object.__setattr__(self, head, getattr(gm, head))

    def _find_through(self) -> None:
        """The model and the modules the trace went through: their hooks are checked per call."""
        model = self.model
        through = (model, *(model.get_submodule(n) for n in self._through_names))
        object.__setattr__(self, "_through", through)

    def _current_modes(self) -> tuple[bool, ...]:
        return tuple(m.training for m in self.model.modules())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if _hooked(*self._through) or self._current_modes() != self._modes:
            return self.model(*args, **kwargs)
        return self._forward(self, *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in _TRACED}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._fold()  # the traced code is made at run time: unpickling traces again

    def __deepcopy__(self, memo: dict[int, Any]) -> FoldedBatchNorm:
        # The traced code is shared, not traced again: torch.fx patches nn.Module.__call__ for
        # every thread while it traces, and copies are made for worker threads.
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__getstate__(), memo))
        for key in _TRACED:
            if key != "_through":
                object.__setattr__(new, key, self.__dict__[key])
        new._find_through()
        return new

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
