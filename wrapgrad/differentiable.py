"""Differentiable attribution kernels, and FAR's ReLU second-derivative trick.

A training objective that puts an attribution map into its loss (IG-NORM, AAT, ...) needs the
map's derivative with respect to the parameters (the outer step) and to the inputs (the inner
maximisation). Captum's maps are detached; these kernels compute the same maps with
``create_graph=True``, so they keep a graph to the inputs and to the parameters:

.. math::
    \\mathrm{SM}(x) = |\\nabla_x f_t(x)| \\quad \\text{(FAR Eq. 1)}, \\qquad
    \\mathrm{IxG}(x) = x \\odot \\nabla_x f_t(x),

    \\mathrm{IG}(x, b) = (x - b) \\odot \\sum_{k=1}^{m} w_k\\,
        \\nabla f_t\\big(b + \\alpha_k (x - b)\\big) \\quad \\text{(FAR Eq. 2)},

where :math:`(\\alpha_k, w_k)` is Captum's integration rule for ``method`` and ``n_steps``
(Gauss-Legendre by default; Riemann left/right/middle/trapezoid), so the values agree with
``captum.attr.IntegratedGradients`` for the same steps, and completeness
:math:`\\sum_i \\mathrm{IG}_i = f_t(x) - f_t(b)` holds up to the rule's error. The ``m``
interpolation points travel as **one batch** of ``m * B`` rows laid out block-wise
(``torch.cat([path_1, ..., path_m])``, Captum's layout; :data:`wrapgrad.records.VMAP_LAYOUTS`).

**FAR's trick** (Ivankay et al., Sec. 4). A ReLU network is piecewise linear: the derivative of a
gradient map with respect to the input is zero almost everywhere, so a first-order inner
maximisation has nothing to follow. ``softplus_beta=β`` keeps the exact ReLU forward pass and the
exact ReLU first derivative (the maps are unchanged, bit for bit) and replaces only ReLU's second
derivative by softplus(β)'s,

.. math:: \\frac{d^2}{dx^2}\\mathrm{ReLU}(x) := \\beta\\,\\sigma(\\beta x)\\,(1 - \\sigma(\\beta x)).

It is a custom autograd function swapped in for every ReLU call during the forward pass by a
:class:`torch.overrides.TorchFunctionMode` (:class:`FarReLUMode`); the user's module is never
edited. ``nn.ReLU``, ``F.relu``, ``torch.relu``, ``Tensor.relu`` and their in-place forms are
covered; ReLUs written as ``clamp`` or ``max`` are not.

Example::

    from wrapgrad.differentiable import integrated_gradients
    maps = integrated_gradients(model, x, target=y, n_steps=16, softplus_beta=1.0)
    loss = maps.abs().sum()      # d loss / d parameters and d loss / d x both exist
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from wrapgrad.checks import (
    as_input_tuple,
    check_choice,
    check_positive,
    check_positive_int,
    check_target,
)
from wrapgrad.errors import UnknownNameError, WrapgradTypeError, WrapgradValueError
from wrapgrad.options import check_options
from wrapgrad.records import ExplainerTraits, normalize_name

__all__ = [
    "IG_METHODS",
    "KERNELS",
    "DifferentiableExplainer",
    "FarReLUMode",
    "ReLUReplacementMode",
    "check_differentiable",
    "differentiable_explainer",
    "far_relu",
    "input_x_gradient",
    "integrated_gradients",
    "integration_rule",
    "saliency",
    "select_outputs",
]

#: Captum's integration rules for Integrated Gradients (``method=``).
IG_METHODS = (
    "gausslegendre",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
)


# -- FAR's ReLU: exact forward and first derivative, softplus(β) second derivative ---------------
def _softplus_second_derivative(x: Tensor, beta: float) -> Tensor:
    s = torch.sigmoid(beta * x)
    return beta * s * (1 - s)


class _FarReLUBackward(torch.autograd.Function):
    """ReLU's backward, ``grad * 1[x > 0]`` (what ``threshold_backward`` computes), whose own
    derivative in ``x`` is ``grad * softplus_β''(x)`` instead of zero."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad: Tensor, x: Tensor, beta: float) -> Tensor:
        return torch.where(x > 0, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        grad, x, beta = inputs
        ctx.save_for_backward(grad, x)
        ctx.beta = beta

    @staticmethod
    def backward(ctx: Any, upstream: Tensor) -> tuple[Tensor, Tensor, None]:
        grad, x = ctx.saved_tensors
        d_grad = _FarReLUBackward.apply(upstream, x, ctx.beta)
        d_x = upstream * grad * _softplus_second_derivative(x, ctx.beta)
        return d_grad, d_x, None


class _FarReLU(torch.autograd.Function):
    """``max(x, 0)`` (ATen's ReLU is ``clamp_min(x, 0)``) with :class:`_FarReLUBackward`."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, beta: float) -> Tensor:
        return x.clamp_min(0)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, beta = inputs
        ctx.save_for_backward(x)
        ctx.beta = beta

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        return _FarReLUBackward.apply(grad, x, ctx.beta), None


def far_relu(x: Tensor, beta: float = 1.0) -> Tensor:
    """ReLU with FAR's second derivative: ``relu(x)`` forward, ``1[x > 0]`` first derivative,
    :math:`\\beta\\sigma(\\beta x)(1-\\sigma(\\beta x))` second derivative."""
    return _FarReLU.apply(x, check_positive(beta, "softplus_beta"))


@functools.lru_cache(maxsize=1)
def _relu_functions() -> tuple[frozenset[Any], frozenset[Any]]:
    """``(out-of-place ReLUs, in-place ReLUs)`` that torch dispatches through a function mode."""
    out_of_place = frozenset(obj.relu for obj in (F, torch, Tensor) if hasattr(obj, "relu"))
    in_place = frozenset(obj.relu_ for obj in (F, torch, Tensor) if hasattr(obj, "relu_"))
    return out_of_place, in_place


class ReLUReplacementMode(TorchFunctionMode):
    """While active, every ReLU call is answered by :meth:`replace`: the skeleton that
    :class:`FarReLUMode` (and the softplus(β) twin of the metrics plugin) fill in.

    Caught are the ReLUs torch dispatches through a function mode: ``nn.ReLU``, ``F.relu``,
    ``torch.relu``, ``Tensor.relu`` and their in-place forms (``relu_``, ``inplace=True``); the
    user's modules are never swapped. ReLUs written as ``clamp`` or ``max`` are not caught.
    A subclass implements :meth:`replace`; :meth:`applies` says which calls it takes (default:
    all), the others run the ordinary ReLU.
    """

    def applies(self, x: Any) -> bool:
        """Whether a ReLU call on ``x`` is replaced (default: always)."""
        return True

    def replace(self, x: Tensor, inplace: bool) -> Tensor:
        """What the ReLU call on ``x`` returns; an in-place call (``inplace``) must also write
        its result into ``x`` (code may ignore the returned tensor, as in ``h.relu_()``)."""
        raise NotImplementedError

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        out_of_place, in_place = _relu_functions()
        if func not in out_of_place and func not in in_place:
            return func(*args, **kwargs)
        x = args[0] if args else kwargs.get("input")
        if not self.applies(x):
            return func(*args, **kwargs)
        inplace = func in in_place or (
            func is F.relu and bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
        )
        return self.replace(x, inplace)


class FarReLUMode(ReLUReplacementMode):
    """While active, every ReLU call that autograd records is :func:`far_relu` (FAR Sec. 4).

    The forward values and first derivatives are exactly ReLU's; only second derivatives change.
    In-place forms (``nn.ReLU(inplace=True)``, ``relu_``) still write into their input. Calls
    without gradient tracking run the ordinary ReLU.

    Args:
        beta: the softplus tightness β > 0 (FAR Table 2 uses β = 1).

    Example::

        with FarReLUMode(beta=1.0):
            logits = model(x)        # the same logits; d²/dx² now follows softplus(β)
    """

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = check_positive(beta, "softplus_beta")

    def applies(self, x: Any) -> bool:
        return isinstance(x, Tensor) and x.requires_grad and torch.is_grad_enabled()

    def replace(self, x: Tensor, inplace: bool) -> Tensor:
        if not inplace:
            return _FarReLU.apply(x, self.beta)
        # In place: ``x`` keeps its pre-activation for the backward in a clone, then receives the
        # activation.
        return x.copy_(_FarReLU.apply(x.clone(), self.beta))


def _forward_mode(softplus_beta: float | None) -> Any:
    import contextlib

    if softplus_beta is None:
        return contextlib.nullcontext()
    return FarReLUMode(softplus_beta)


# -- targets and forward passes ---------------------------------------------------------------------
def select_outputs(out: Tensor, target: Any, argument: str = "target") -> Tensor:
    """The output each row's map explains, shape ``(N,)``, from Captum's target forms.

    ``target``: None (the model returns one value per row), an int (``out[:, t]``), a tuple of
    ints (``out[:, t0, t1, ...]`` for multi-dimensional outputs), or a tensor / list of ``N``
    class indices (one per row).
    """
    if not isinstance(out, Tensor) or not out.is_floating_point():
        raise WrapgradTypeError(
            f"model: expected the forward pass to return a floating-point tensor, got "
            f"{type(out).__name__ if not isinstance(out, Tensor) else out.dtype}"
        )
    n = out.shape[0]
    if target is None:
        flat = out.reshape(n, -1)
        if flat.shape[1] != 1:
            raise WrapgradValueError(
                f"{argument}: the model returns {flat.shape[1]} values per sample; pass target= "
                f"(the class whose output the map explains)"
            )
        return flat[:, 0]
    if not (isinstance(target, Tensor) and target.device.type != "cpu"):
        # In range, one per row: a named error. Not for a tensor on an accelerator: reading its
        # values back would synchronise the device on every forward pass (IG runs n_steps).
        check_target(target, tuple(out.shape), argument)
    if isinstance(target, int) and not isinstance(target, bool):
        picked = out[:, target]
    elif isinstance(target, tuple) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in target
    ):
        picked = out[(slice(None), *target)]
    else:
        t = torch.as_tensor(target, device=out.device) if isinstance(target, list) else target
        if not isinstance(t, Tensor) or t.dim() != 1 or t.is_floating_point():
            raise WrapgradTypeError(
                f"{argument}: expected None, an int, a tuple of ints, or a 1-D tensor or list of "
                f"class indices, got {type(target).__name__}"
            )
        if t.shape[0] != n:
            raise WrapgradValueError(
                f"{argument}: expected {n} class indices (one per sample), got {t.shape[0]}"
            )
        if out.dim() != 2:
            raise WrapgradValueError(
                f"{argument}: a tensor of class indices needs outputs of shape (N, classes), got "
                f"{tuple(out.shape)}; pass a tuple of indices instead"
            )
        picked = out.gather(1, t.to(device=out.device, dtype=torch.long)[:, None])[:, 0]
    if picked.dim() != 1:
        raise WrapgradValueError(
            f"{argument}: {target!r} selects {tuple(picked.shape[1:])} values per sample from "
            f"an output of shape {tuple(out.shape)}; select one"
        )
    return picked


def _expand(value: Any, n: int) -> Any:
    """Captum's expansion of per-sample arguments to ``n`` interpolation blocks: tensors are
    repeated block-wise (``cat([t] * n)``), anything else passes as it is."""
    if isinstance(value, Tensor) and value.dim() > 0:
        return torch.cat([value] * n) if n > 1 else value
    if isinstance(value, list):
        return _expand(torch.as_tensor(value), n)
    return value


def _extra_args(additional_forward_args: Any) -> tuple[Any, ...]:
    if additional_forward_args is None:
        return ()
    if isinstance(additional_forward_args, tuple):
        return additional_forward_args
    return (additional_forward_args,)


def _differentiable_leaves(tensors: Sequence[Tensor], argument: str) -> tuple[Tensor, ...]:
    """The inputs to differentiate with respect to: each tensor itself where it requires
    gradients (so the maps keep its graph), else a fresh leaf that does."""
    out = []
    for i, t in enumerate(tensors):
        if not t.is_floating_point():
            name = f"{argument}[{i}]" if len(tensors) > 1 else argument
            raise WrapgradTypeError(
                f"{name}: expected a floating-point tensor (maps are input gradients), got dtype "
                f"{t.dtype}"
            )
        out.append(t if t.requires_grad else t.detach().requires_grad_(True))
    return tuple(out)


def _input_gradients(
    model: Callable[..., Tensor],
    points: tuple[Tensor, ...],
    target: Any,
    extra: tuple[Any, ...],
    *,
    create_graph: bool,
    softplus_beta: float | None,
) -> tuple[Tensor, ...]:
    """``∇ f_t`` at ``points`` (one batch), keeping the graph when ``create_graph``."""
    with torch.enable_grad(), _forward_mode(softplus_beta):
        out = model(*points, *extra)
        picked = select_outputs(out, target)
    if not picked.requires_grad:
        raise WrapgradValueError(
            "model: its output does not depend differentiably on its inputs (no gradient "
            "reaches them), so it has no gradient attributions to train or attack"
        )
    grads = torch.autograd.grad(picked.sum(), points, create_graph=create_graph, allow_unused=True)
    if any(g is None for g in grads):
        raise WrapgradValueError(
            "model: its output does not depend differentiably on all its inputs (no gradient "
            "reaches some of them)"
        )
    return tuple(grads)


def _gradients_at_inputs(
    model: Callable[..., Tensor],
    inputs: Tensor | tuple[Tensor, ...],
    target: Any,
    additional_forward_args: Any,
    create_graph: bool,
    softplus_beta: float | None,
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...], bool]:
    """``(inputs as leaves, their gradients, whether they came as a tuple)``."""
    tensors, was_tuple = as_input_tuple(inputs)
    leaves = _differentiable_leaves(tensors, "inputs")
    grads = _input_gradients(
        model,
        leaves,
        target,
        _extra_args(additional_forward_args),
        create_graph=create_graph,
        softplus_beta=softplus_beta,
    )
    return leaves, grads, was_tuple


def _pack(maps: tuple[Tensor, ...], was_tuple: bool) -> Tensor | tuple[Tensor, ...]:
    return maps if was_tuple else maps[0]


# -- the kernels ----------------------------------------------------------------------------------------
def saliency(
    model: Callable[..., Tensor],
    inputs: Tensor | tuple[Tensor, ...],
    target: Any = None,
    *,
    abs: bool = True,
    additional_forward_args: Any = None,
    create_graph: bool = True,
    softplus_beta: float | None = None,
) -> Tensor | tuple[Tensor, ...]:
    """Saliency :math:`|\\nabla_x f_t(x)|` (FAR Eq. 1; ``abs=False``: the signed gradient), as
    ``captum.attr.Saliency`` computes it, with a graph to the inputs and parameters.

    Args:
        model: any callable ``model(*inputs, *additional_forward_args) -> outputs``.
        inputs: a batch ``(B, ...)`` or a tuple of them (multi-input models).
        target: Captum's target forms (see :func:`select_outputs`).
        abs: take magnitudes (Captum's default).
        additional_forward_args: extra arguments of the forward pass.
        create_graph: keep the graph (False: a plain, detached-gradient saliency).
        softplus_beta: FAR's trick (None: the network's own second derivatives).
    """
    _, grads, was_tuple = _gradients_at_inputs(
        model, inputs, target, additional_forward_args, create_graph, softplus_beta
    )
    return _pack(tuple(g.abs() if abs else g for g in grads), was_tuple)


def input_x_gradient(
    model: Callable[..., Tensor],
    inputs: Tensor | tuple[Tensor, ...],
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    create_graph: bool = True,
    softplus_beta: float | None = None,
) -> Tensor | tuple[Tensor, ...]:
    """Input x Gradient :math:`x \\odot \\nabla_x f_t(x)`, as ``captum.attr.InputXGradient``,
    with a graph to the inputs and parameters. Arguments as :func:`saliency`."""
    leaves, grads, was_tuple = _gradients_at_inputs(
        model, inputs, target, additional_forward_args, create_graph, softplus_beta
    )
    return _pack(tuple(x * g for x, g in zip(leaves, grads, strict=True)), was_tuple)


def integration_rule(method: str, n_steps: int) -> tuple[list[float], list[float]]:
    """``(alphas, weights)`` of Captum's rule ``method`` with ``n_steps`` points on [0, 1]:
    Gauss-Legendre nodes and weights rescaled from [-1, 1], or the Riemann sums (weights 1/m).
    As in Captum, the trapezoid rule takes ``m`` equidistant points from 0 to 1 with weights
    1/m and halved ends, which sum to (m - 1)/m, not 1."""
    method = check_choice(method, "method", IG_METHODS)
    n = check_positive_int(n_steps, "n_steps")
    if method == "gausslegendre":
        import numpy as np

        nodes, weights = np.polynomial.legendre.leggauss(n)
        return (0.5 * (1 + nodes)).tolist(), (0.5 * weights).tolist()
    if method == "riemann_trapezoid":
        if n < 2:
            raise WrapgradValueError(
                f"n_steps: the trapezoid rule needs at least 2 points, got {n_steps}"
            )
        weights = [1.0 / n] * n
        weights[0] /= 2
        weights[-1] /= 2
        return [k / (n - 1) for k in range(n)], weights
    offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[method]
    return [(k + offset) / n for k in range(n)], [1.0 / n] * n


def _baselines(baselines: Any, tensors: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Captum's baseline forms, one per input: None/0 (zeros), a number, a tensor of the
    input's shape or of its per-sample shape (broadcast), or a tuple of these."""
    if baselines is None or (
        isinstance(baselines, (int, float)) and not isinstance(baselines, bool)
    ):
        baselines = (baselines,) * len(tensors)
    elif not isinstance(baselines, tuple):
        baselines = (baselines,)
    if len(baselines) != len(tensors):
        raise WrapgradValueError(
            f"baselines: expected {len(tensors)} baselines (one per input), got {len(baselines)}"
        )
    out = []
    for i, (b, x) in enumerate(zip(baselines, tensors, strict=True)):
        name = f"baselines[{i}]" if len(tensors) > 1 else "baselines"
        if b is None:
            b = 0.0
        if isinstance(b, (int, float)) and not isinstance(b, bool):
            out.append(torch.full((), float(b), dtype=x.dtype, device=x.device))
            continue
        if not isinstance(b, Tensor):
            raise WrapgradTypeError(
                f"{name}: expected None, a number or a tensor, got {type(b).__name__}"
            )
        if tuple(b.shape) not in (tuple(x.shape), (1, *x.shape[1:]), tuple(x.shape[1:])):
            raise WrapgradValueError(
                f"{name}: expected the input's shape {tuple(x.shape)} or its per-sample shape "
                f"{tuple(x.shape[1:])}, got {tuple(b.shape)}"
            )
        out.append(b.to(dtype=x.dtype, device=x.device))
    return tuple(out)


def integrated_gradients(
    model: Callable[..., Tensor],
    inputs: Tensor | tuple[Tensor, ...],
    target: Any = None,
    *,
    baselines: Any = None,
    n_steps: int = 50,
    method: str = "gausslegendre",
    multiply_by_inputs: bool = True,
    additional_forward_args: Any = None,
    create_graph: bool = True,
    softplus_beta: float | None = None,
) -> Tensor | tuple[Tensor, ...]:
    """Integrated Gradients (Sundararajan et al. 2017; FAR Eq. 2) with a graph to the inputs,
    the baselines and the parameters.

    .. math::
        \\mathrm{IG}(x, b) = (x - b) \\odot \\sum_{k=1}^{m} w_k\\,
        \\nabla f_t\\big(b + \\alpha_k (x - b)\\big)

    The ``m = n_steps`` points ``b + α_k (x - b)`` form one batch of ``m * B`` rows (block
    layout, as Captum), so one forward and one backward pass compute the map; targets and tensor
    ``additional_forward_args`` are repeated block-wise. Values agree with
    ``captum.attr.IntegratedGradients(model, multiply_by_inputs=...)`` called with the same
    ``baselines``, ``n_steps`` and ``method``.

    Args:
        model, inputs, target, additional_forward_args, create_graph, softplus_beta: as
            :func:`saliency`.
        baselines: Captum's forms: None or a number (a constant image), a tensor of the input's
            shape (one baseline per sample, e.g. ``x`` itself for RAR's IG(x, x')) or of its
            per-sample shape, or a tuple of these for tuple inputs.
        n_steps: the number of interpolation points ``m``.
        method: the integration rule (:data:`IG_METHODS`, Captum's names).
        multiply_by_inputs: multiply by ``x - b`` (Captum's default; False: the averaged
            gradient only).

    Memory: the graph holds ``m * B`` rows of activations (twice over when a loss differentiates
    the map again); see ``docs/training.md`` for where chunking or checkpointing applies.
    """
    tensors, was_tuple = as_input_tuple(inputs)
    _differentiable_leaves(tensors, "inputs")  # dtype check
    bases = _baselines(baselines, tensors)
    alphas, weights = integration_rule(method, n_steps)
    m = len(alphas)
    paths = []
    for x, b in zip(tensors, bases, strict=True):
        a = torch.tensor(alphas, dtype=x.dtype, device=x.device).reshape(m, *([1] * x.dim()))
        path = (b + a * (x - b)).reshape(m * x.shape[0], *x.shape[1:])
        paths.append(path if path.requires_grad else path.detach().requires_grad_(True))
    extra = tuple(_expand(arg, m) for arg in _extra_args(additional_forward_args))
    grads = _input_gradients(
        model,
        tuple(paths),
        _expand(target, m),
        extra,
        create_graph=create_graph,
        softplus_beta=softplus_beta,
    )
    maps = []
    for x, b, g in zip(tensors, bases, grads, strict=True):
        w = torch.tensor(weights, dtype=g.dtype, device=g.device).reshape(m, *([1] * x.dim()))
        total = (g.reshape(m, *x.shape) * w).sum(dim=0)
        maps.append(total * (x - b) if multiply_by_inputs else total)
    return _pack(tuple(maps), was_tuple)


# -- explainer objects -----------------------------------------------------------------------------------
#: The differentiable kernels by method name (Captum's snake_case names).
KERNELS: dict[str, Callable[..., Any]] = {
    "saliency": saliency,
    "input_x_gradient": input_x_gradient,
    "integrated_gradients": integrated_gradients,
}


class DifferentiableExplainer:
    """A differentiable kernel as an :class:`~wrapgrad.protocols.Explainer`:
    ``explainer(model, inputs, target=None, **kwargs)`` returns maps with a graph.

    Its :class:`~wrapgrad.records.ExplainerTraits` say ``differentiable=True``,
    ``requires_grad_inputs=True`` and ``vmap_layout="block"`` (the engine may run it on stacked
    weight samples; Integrated Gradients' steps are laid out block-wise).

    Args:
        method: ``"saliency"``, ``"input_x_gradient"`` or ``"integrated_gradients"``.
        **defaults: keyword arguments of the kernel for every call (``n_steps``, ``method``,
            ``baselines``, ``abs``, ``multiply_by_inputs``, ``softplus_beta``, ...); call-time
            keywords override them. An unknown name raises an error with the closest names.
    """

    def __init__(self, method: str, /, **defaults: Any) -> None:
        key = normalize_name(method) if isinstance(method, str) else method
        if key not in KERNELS:
            raise UnknownNameError("method", str(method), KERNELS, what="differentiable method")
        self.kernel = KERNELS[key]
        check_options(defaults, self.kernel, what=f"differentiable {key}")
        self.name = key
        self.attribute_defaults = dict(defaults)
        self.init_options: dict[str, Any] = {}
        self.traits = ExplainerTraits(
            name=key, differentiable=True, requires_grad_inputs=True, vmap_layout="block"
        )
        self.family = self.traits.family

    def __call__(
        self, model: Callable[..., Tensor], inputs: Any, target: Any = None, **kwargs: Any
    ) -> Any:
        check_options(kwargs, self.kernel, what=f"differentiable {self.name}")
        return self.kernel(model, inputs, target, **{**self.attribute_defaults, **kwargs})

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in sorted(self.attribute_defaults.items()))
        return f"DifferentiableExplainer({self.name!r}{', ' + opts if opts else ''})"


def differentiable_explainer(method: Any, /, **options: Any) -> DifferentiableExplainer:
    """The differentiable version of ``method`` (a name such as ``"integrated_gradients"``, or a
    Captum class ``Saliency`` / ``InputXGradient`` / ``IntegratedGradients``) with ``options``;
    an :class:`~wrapgrad.errors.UnknownNameError` for a method without one."""
    if isinstance(method, type):
        import re

        method = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", method.__name__).lower()
    if not isinstance(method, str):
        raise WrapgradTypeError(
            f"method: expected a method name or a Captum class, got {type(method).__name__}"
        )
    return DifferentiableExplainer(method, **options)


def check_differentiable(
    model: Callable[..., Tensor], inputs: Tensor, argument: str = "model"
) -> None:
    """Raise a :class:`~wrapgrad.errors.WrapgradValueError` naming ``argument`` unless
    ``model``'s output is a floating tensor that depends differentiably on ``inputs``.

    Probes one sample; module buffers (BatchNorm statistics) and the global RNG are left as
    they were."""
    from torch import nn

    x = inputs[:1].detach()
    if not x.is_floating_point():
        raise WrapgradTypeError(
            f"inputs: expected floating-point inputs (attributions are input gradients), got "
            f"dtype {x.dtype}"
        )
    x.requires_grad_(True)
    buffers = (
        {k: b.clone() for k, b in model.named_buffers()} if isinstance(model, nn.Module) else None
    )
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.enable_grad():
        if buffers:
            out = torch.func.functional_call(model, buffers, (x,))
        else:
            out = model(x)
    ok = isinstance(out, Tensor) and out.is_floating_point() and out.requires_grad
    if ok:
        (g,) = torch.autograd.grad(out.sum(), x, allow_unused=True)
        ok = g is not None
    if not ok:
        raise WrapgradValueError(
            f"{argument}: the objective needs attributions (input gradients), but the model's "
            f"output does not depend differentiably on its inputs (got "
            f"{type(out).__name__ if not isinstance(out, Tensor) else out.dtype} output"
            f"{'' if not isinstance(out, Tensor) or out.requires_grad else ' without a graph'})"
        )
