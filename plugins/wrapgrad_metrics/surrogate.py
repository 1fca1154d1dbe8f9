"""Differentiable stand-ins for an ``explain`` callable, and what attacks share.

Captum computes gradients with ``create_graph=False``, so its maps cannot be differentiated with
respect to the input. Attacks and the sensitivity metric therefore follow the gradient of a
*surrogate*: the same method with ``create_graph=True`` (the kernels of
:mod:`wrapgrad.differentiable`: Saliency, InputXGradient, IntegratedGradients; for DeepLIFT the
Rescale rule written with torch operations, :mod:`wrapgrad_metrics.rescale`). Enhanced
explanations (SmoothGrad, NoiseGrad) are attacked through their base method's surrogate. Where
there is no surrogate, a gradient-free SPSA estimate through ``explain`` itself is used.
Reported values are always measured with ``explain``. The ε-ball helpers (``project``, ``random_start``, ``step_direction``) are
:mod:`wrapgrad.adversarial`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import torch
from torch import Tensor

from wrapgrad.adversarial import project, random_start, step_direction
from wrapgrad.checks import check_bounds as check_range_argument
from wrapgrad.checks import check_map
from wrapgrad.differentiable import KERNELS
from wrapgrad.errors import WrapgradTypeError, WrapgradValueError
from wrapgrad_metrics.rescale import deep_lift_rescale
from wrapgrad_metrics.softplus import softplus_twin

__all__ = [
    "Ball",
    "MapFn",
    "ascent_forward",
    "check_bounds",
    "check_surrogate",
    "explain_map",
    "explainer_info",
    "first_map",
    "grad_or_zeros",
    "in_row_chunks",
    "make_surrogate",
    "predict",
    "project",
    "random_start",
    "resolve_surrogate",
    "resolve_target",
    "spsa_gradient",
    "step_direction",
    "surrogate_ascent",
    "target_logits",
    "where_label_kept",
]

#: ``map_fn(forward, x, target) -> map``: a differentiable attribution map.
MapFn = Callable[[Callable[..., Tensor], Tensor, Tensor], Tensor]


def first_map(maps: Any, argument: str = "explain") -> Tensor:
    """The map of a single-input model (``explain`` may return a 1-tuple):
    :func:`wrapgrad.checks.check_map`, the error naming ``explain``."""
    return check_map(maps, argument)


def explain_map(explain: Callable[..., Any], x: Tensor, target: Tensor) -> Tensor:
    """``explain(x, target=target)`` as a detached single map (the inputs are handed over as a
    fresh leaf that requires grad, as gradient methods want)."""
    z = x.detach()
    if z.is_floating_point():
        z = z.clone().requires_grad_(True)
    return first_map(explain(z, target=target)).detach()


def predict(model: Callable[..., Tensor], x: Tensor) -> Tensor:
    """The predicted class of each sample (no gradients)."""
    with torch.no_grad():
        out = model(x)
    return out.reshape(out.shape[0], -1).argmax(dim=1)


def where_label_kept(
    model: Callable[..., Tensor], candidate: Tensor, fallback: Tensor, labels: Tensor
) -> tuple[Tensor, Tensor]:
    """``(points, kept)``: ``candidate`` for the samples whose predicted class is still
    ``labels`` (``kept``), ``fallback`` for the others (how the label-preserving ascents of S_r
    and IFIA reject a start or a step that flips the prediction)."""
    kept = predict(model, candidate) == labels
    mask = kept.reshape(-1, *([1] * (candidate.dim() - 1)))
    return torch.where(mask, candidate, fallback), kept


@attrs.frozen
class Ball:
    """The search region of a label-preserving ascent (S_r, IFIA): the ``norm`` ball of
    ``radius`` around ``center`` clipped to ``bounds``, and the predicted ``labels`` at the
    center that its points must keep (None: points may change the prediction)."""

    model: Callable[..., Tensor]
    center: Tensor
    radius: float
    norm: str
    bounds: tuple[float, float] | None
    labels: Tensor | None

    def start(self, generator: torch.Generator, scale: float = 1.0) -> tuple[Tensor, Tensor]:
        """``(point, kept)``: a uniform random point of the ball (of ``scale`` times its
        radius), or the center for the samples where it would change the prediction."""
        x = self.center
        point = self.project(x + random_start(x, self.radius, self.norm, generator, scale))
        return self._kept(point, x)

    def step(self, xa: Tensor, grad: Tensor, eta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(next point, kept, next eta)`` of one step :math:`\\mathrm{Project}(x_a + \\eta\\,
        \\mathrm{Normalize}(g))` per sample; a step that would change the prediction is not
        taken and that sample's step size is halved."""
        shape = (-1, *([1] * (xa.dim() - 1)))
        candidate = self.project(xa + eta.reshape(shape) * step_direction(grad, self.norm))
        point, kept = self._kept(candidate, xa)
        return point, kept, torch.where(kept, eta, eta / 2)

    def project(self, point: Tensor) -> Tensor:
        """``point`` projected onto the ball and the bounds."""
        return project(point, self.center, self.radius, self.norm, self.bounds)

    def _kept(self, candidate: Tensor, fallback: Tensor) -> tuple[Tensor, Tensor]:
        if self.labels is None:
            return candidate, torch.ones(
                candidate.shape[0], dtype=torch.bool, device=candidate.device
            )
        return where_label_kept(self.model, candidate, fallback, self.labels)


def resolve_target(model: Callable[..., Tensor], inputs: Tensor, target: Any) -> Tensor:
    """``target`` as a ``(B,)`` long tensor; ``None`` means the predicted class."""
    if not isinstance(inputs, Tensor):
        raise WrapgradTypeError(
            f"inputs: expected a torch.Tensor (B, ...), got {type(inputs).__name__}"
        )
    bsz = inputs.shape[0]
    if target is None:
        return predict(model, inputs)
    if isinstance(target, int) and not isinstance(target, bool):
        return torch.full((bsz,), target, dtype=torch.long, device=inputs.device)
    if isinstance(target, (list, tuple)):
        target = torch.as_tensor(target)
    if isinstance(target, Tensor):
        t = target.to(device=inputs.device, dtype=torch.long).reshape(-1)
        if t.numel() == 1:
            t = t.expand(bsz).clone()
        if t.numel() != bsz:
            raise WrapgradValueError(
                f"target: expected None, an int, or {bsz} class indices (one per sample), got "
                f"{t.numel()}"
            )
        return t
    raise WrapgradTypeError(
        f"target: expected None, an int or a tensor of class indices, got {type(target).__name__}"
    )


def target_logits(forward: Callable[..., Tensor], x: Tensor, target: Tensor) -> Tensor:
    """``f_t(x)`` per sample, shape ``(B,)``."""
    out = forward(x)
    return out.reshape(out.shape[0], -1).gather(1, target[:, None]).squeeze(1)


def explainer_info(explain: Any) -> tuple[str | None, dict[str, Any], dict[str, Any], Any]:
    """``(method name, attribute defaults, constructor options, enhancer)`` of an ``explain``
    returned by :func:`wrapgrad.wrap` (or of an explainer); ``(None, {}, {}, None)`` if unknown."""
    enhancer = getattr(explain, "enhancer", None)
    ex = getattr(explain, "explainer", explain) if hasattr(explain, "model") else explain
    defaults: dict[str, Any] = {}
    # unwrap wrapgrad.captum_adapter.BoundExplainer layers, the outer defaults winning
    while hasattr(ex, "defaults") and hasattr(ex, "explainer"):
        defaults = {**ex.defaults, **defaults}
        ex = ex.explainer
    defaults = {**dict(getattr(ex, "attribute_defaults", {}) or {}), **defaults}
    init = dict(getattr(ex, "init_options", {}) or {})
    name = getattr(ex, "name", None)
    return (name if isinstance(name, str) else None), defaults, init, enhancer


def grad_or_zeros(value: Tensor, x: Tensor) -> Tensor:
    """``d value.sum() / dx``, zeros where ``value`` does not depend on ``x`` (e.g. the gradient
    map of a linear model)."""
    if not value.requires_grad:
        return torch.zeros_like(x)
    (g,) = torch.autograd.grad(value.sum(), x, allow_unused=True)
    return torch.zeros_like(x) if g is None else g.detach()


def _single_baseline(defaults: dict[str, Any]) -> Any:
    """The configured ``baselines`` of a single-input method (default 0; None if a tuple of
    several)."""
    baselines = defaults.get("baselines", 0.0)
    if isinstance(baselines, tuple):
        baselines = baselines[0] if len(baselines) == 1 else None
    return baselines


def _multiply_by_inputs(defaults: dict[str, Any], init: dict[str, Any]) -> bool:
    return bool(init.get("multiply_by_inputs", defaults.get("multiply_by_inputs", True)))


def _deep_lift_surrogate(defaults: dict[str, Any], init: dict[str, Any]) -> MapFn | None:
    """DeepLIFT's Rescale map (:func:`~wrapgrad_metrics.rescale.deep_lift_rescale`), flagged
    ``needs_twin = False``: it has input gradients on the ReLU network itself."""
    baselines = _single_baseline(defaults)
    if baselines is None:
        return None
    multiply = _multiply_by_inputs(defaults, init)

    def surrogate(forward: Callable[..., Tensor], x: Tensor, target: Tensor) -> Tensor:
        return deep_lift_rescale(
            forward, x, target, baselines=baselines, multiply_by_inputs=multiply
        )

    surrogate.__name__ = "deep_lift"
    surrogate.needs_twin = False  # type: ignore[attr-defined]
    return surrogate


def in_row_chunks(
    fn: Callable[[Tensor, slice], Tensor],
    x: Tensor,
    chunk: int | None,
    *,
    gradient: bool = False,
) -> Tensor:
    """``fn(z, rows)`` over chunks of ``chunk`` rows of ``x`` (None: one chunk), each ``z`` a
    fresh leaf copy of ``x[rows]`` that requires grad, concatenated; with ``gradient``, the
    gradient :math:`\\partial \\sum fn(z, rows) / \\partial z` of each chunk instead
    (:func:`grad_or_zeros`): for an objective that is a sum of per-sample terms, the gradient of
    the whole batch."""
    size = x.shape[0] if chunk is None else chunk
    parts = []
    for start in range(0, x.shape[0], max(1, size)):
        rows = slice(start, start + size)
        z = x[rows].detach().clone().requires_grad_(True)
        value = fn(z, rows)
        parts.append(grad_or_zeros(value, z) if gradient else value)
    return torch.cat(parts)


def make_surrogate(explain: Any, *, ig_steps: int = 16) -> MapFn | None:
    """A differentiable version of ``explain``'s method, or None where there is none.

    Known: ``saliency`` (``abs`` as configured, Captum's default True), ``input_x_gradient``,
    ``integrated_gradients`` (Captum's rule ``method`` as configured, default Gauss-Legendre,
    with ``min(n_steps, ig_steps)`` steps; ``baselines`` as configured, default 0;
    ``multiply_by_inputs`` as configured): the kernels of :mod:`wrapgrad.differentiable`;
    ``deep_lift``: the Rescale rule (:mod:`wrapgrad_metrics.rescale`; ``baselines`` and
    ``multiply_by_inputs`` as configured).
    """
    name, defaults, init, _ = explainer_info(explain)
    if name == "deep_lift":
        return _deep_lift_surrogate(defaults, init)
    if name not in KERNELS:
        return None
    options: dict[str, Any] = {}
    if name == "saliency":
        options["abs"] = bool(defaults.get("abs", True))
    if name == "integrated_gradients":
        baselines = _single_baseline(defaults)
        if baselines is None:
            return None
        options.update(
            baselines=baselines,
            n_steps=max(1, min(int(defaults.get("n_steps", 50)), ig_steps)),
            method=defaults.get("method", "gausslegendre"),
            multiply_by_inputs=_multiply_by_inputs(defaults, init),
        )
    kernel = KERNELS[name]

    def surrogate(forward: Callable[..., Tensor], x: Tensor, target: Tensor) -> Tensor:
        return kernel(forward, x, target, create_graph=True, **options)

    surrogate.__name__ = name
    return surrogate


def check_surrogate(surrogate: Any) -> str | MapFn:
    """``surrogate=`` of an attack or of S_r: ``"auto"``, ``"spsa"`` or a callable
    ``(forward, x, target) -> map``."""
    if not (callable(surrogate) or surrogate in ("auto", "spsa")):
        raise WrapgradValueError(
            f"surrogate: expected 'auto', 'spsa' or a callable, got {surrogate!r}"
        )
    return surrogate


def resolve_surrogate(surrogate: str | MapFn, explain: Any) -> MapFn | None:
    """The differentiable map a gradient ascent follows: a callable ``surrogate`` itself;
    ``"auto"``: :func:`make_surrogate` of ``explain`` (None where it knows none); ``"spsa"``:
    None (the ascent estimates gradients through ``explain`` by SPSA)."""
    if callable(surrogate):
        return surrogate
    return make_surrogate(explain) if surrogate == "auto" else None


def ascent_forward(
    model: Callable[..., Tensor], beta: float | None, map_fn: MapFn | None = None
) -> Callable[..., Tensor]:
    """The forward pass a surrogate map is differentiated through: ``model`` itself
    (``beta=None``, or a ``map_fn`` flagged ``needs_twin = False`` whose map has input
    gradients on a ReLU network, as DeepLIFT's Rescale map) or its softplus(β) twin
    (:func:`~wrapgrad_metrics.softplus.softplus_twin`, FAR Sec. 4)."""
    if beta is None or not getattr(map_fn, "needs_twin", True):
        return model
    return softplus_twin(model, beta)


def surrogate_ascent(
    model: Callable[..., Tensor], explain: Any, surrogate: str | MapFn, beta: float | None
) -> tuple[MapFn | None, Callable[..., Tensor]]:
    """``(map_fn, forward)`` of a gradient ascent on an attribution map: the map it follows
    (:func:`resolve_surrogate`; None: SPSA through ``explain``) and the forward pass that map
    is differentiated through (:func:`ascent_forward`)."""
    map_fn = resolve_surrogate(surrogate, explain)
    return map_fn, ascent_forward(model, beta, map_fn)


def spsa_gradient(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    generator: torch.Generator,
    n_samples: int = 8,
    delta: float = 1e-3,
) -> Tensor:
    """Gradient-free estimate of :math:`\\nabla_x \\sum_b fn(x)_b` (SPSA, Spall 1992):
    :math:`\\hat g = \\frac{1}{n}\\sum_j \\frac{fn(x + c u_j) - fn(x - c u_j)}{2c} u_j` with
    Rademacher :math:`u_j`."""
    g = torch.zeros_like(x)
    for _ in range(n_samples):
        u = torch.randint(0, 2, x.shape, generator=generator, device="cpu").to(x) * 2 - 1
        diff = fn(x + delta * u) - fn(x - delta * u)
        g += (diff / (2 * delta)).reshape(-1, *([1] * (x.dim() - 1))) * u
    return g / n_samples


def check_bounds(bounds: Any, x: Tensor) -> tuple[float, float] | None:
    """``(low, high)`` as floats (None passes); the inputs must lie inside."""
    checked = check_range_argument(bounds)
    if checked is None:
        return None
    low, high = checked
    if bool(((x < low) | (x > high)).any()):
        raise WrapgradValueError(
            f"bounds: the inputs lie outside {(low, high)} (min {float(x.min()):.4g}, max "
            f"{float(x.max()):.4g}); pass the data range, or bounds=None"
        )
    return low, high
