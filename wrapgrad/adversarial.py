"""Pure adversarial kernels: the ε-ball projection, random starts, step directions and projected
gradient ascent, shared by the attribution attacks (IFIA) and the training objectives (PGD-AT,
IG-NORM, AAT, ...).

Projected gradient ascent (Madry et al. 2018; FAR Algorithms 1-2, lines 3-5):

.. math::
    x^{0} = x \\;(\\text{or } x + u,\\; u \\sim U(B_\\varepsilon)), \\qquad
    x^{t+1} = \\mathrm{Project}_p\\big(x^{t} + \\eta\\,\\mathrm{Normalize}_p(\\nabla_x L(x^{t}))\\big),

with :math:`\\mathrm{Normalize}_\\infty = \\mathrm{sign}`, :math:`\\mathrm{Normalize}_2 = g/\\|g\\|_2`,
and :math:`\\mathrm{Project}_p` the projection onto :math:`\\{\\|x' - x\\|_p \\le \\varepsilon\\}`
intersected with the data bounds.

Example::

    from wrapgrad.adversarial import pgd
    x_adv = pgd(lambda z: F.cross_entropy(model(z), y, reduction="none"), x,
                epsilon=0.3, step_size=0.01, steps=40, bounds=(0.0, 1.0),
                random_start=True, generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from wrapgrad.errors import WrapgradValueError

__all__ = [
    "ATTACK_OPTIONS",
    "attack_options",
    "check_attack",
    "check_norm",
    "pgd",
    "project",
    "random_start",
    "step_direction",
]

#: The options of :func:`pgd` that describe an attack: the ball, the steps, the data range and
#: the start. A PGD training objective and the PGD accuracy metric each hold them as attributes.
ATTACK_OPTIONS = ("epsilon", "step_size", "steps", "norm", "bounds", "random_start")

_NORMS = {"linf": "linf", "l_inf": "linf", "inf": "linf", "l2": "l2", "l_2": "l2", "2": "l2"}


def check_norm(norm: Any, argument: str = "norm") -> str:
    """``"linf"`` or ``"l2"`` from the usual spellings (``"l_inf"``, ``"inf"``, ``"∞"``, ``2``)."""
    key = str(norm).lower().replace("∞", "inf")
    if key not in _NORMS:
        raise WrapgradValueError(f"{argument}: expected 'linf' or 'l2', got {norm!r}")
    return _NORMS[key]


def check_attack(
    epsilon: Any,
    step_size: Any,
    steps: Any,
    random_start: Any,
    norm: Any,
    bounds: Any,
    *,
    default_step: Callable[[float, int], float],
) -> dict[str, Any]:
    """The :data:`ATTACK_OPTIONS`, validated (each error names its argument);
    ``step_size=None`` becomes ``default_step(epsilon, steps)``."""
    from wrapgrad.checks import check_bool, check_bounds, check_positive, check_positive_int

    epsilon = check_positive(epsilon, "epsilon")
    steps = check_positive_int(steps, "steps")
    return {
        "epsilon": epsilon,
        "step_size": (
            default_step(epsilon, steps)
            if step_size is None
            else check_positive(step_size, "step_size")
        ),
        "steps": steps,
        "norm": check_norm(norm),
        "bounds": check_bounds(bounds),
        "random_start": check_bool(random_start, "random_start"),
    }


def attack_options(source: Any, **overrides: Any) -> dict[str, Any]:
    """The :data:`ATTACK_OPTIONS` ``source`` holds as attributes, with ``overrides``: the keyword
    arguments of :func:`pgd` for an attack configured by ``source``."""
    return {name: getattr(source, name) for name in ATTACK_OPTIONS} | overrides


def _per_sample(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def step_direction(g: Tensor, norm: str) -> Tensor:
    """``Normalize_p`` of FAR Algorithm 1: the sign for l_inf, the unit vector for l_2."""
    if norm == "linf":
        return g.sign()
    flat = g.reshape(g.shape[0], -1).norm(dim=1).clamp_min(1e-12)
    return g / _per_sample(flat, g)


def project(
    x_adv: Tensor, x: Tensor, epsilon: float, norm: str, bounds: tuple[float, float] | None
) -> Tensor:
    """``Project_p`` of FAR Algorithm 1: into the ε-ball around ``x`` and the data bounds."""
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-epsilon, epsilon)
    else:
        n = delta.reshape(delta.shape[0], -1).norm(dim=1).clamp_min(1e-12)
        delta = delta * _per_sample((epsilon / n).clamp(max=1.0), x)
    out = x + delta
    if bounds is not None:
        out = out.clamp(bounds[0], bounds[1])
    return out


def random_start(
    x: Tensor, epsilon: float, norm: str, generator: torch.Generator | None, scale: float = 1.0
) -> Tensor:
    """A uniform draw from the ε-ball (l_inf: per coordinate; l_2: uniform in the ball), drawn
    on the generator's device (CPU by default) and moved to ``x``'s, so a seed gives the same
    start on every device."""
    device = generator.device if generator is not None else torch.device("cpu")
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)
        return (2 * u - 1) * epsilon * scale
    d = x[0].numel()
    v = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)
    v = v / _per_sample(v.reshape(x.shape[0], -1).norm(dim=1).clamp_min(1e-12), x)
    r = torch.rand(x.shape[0], generator=generator, dtype=x.dtype, device=device).to(x.device)
    return v * _per_sample(epsilon * scale * r ** (1.0 / d), x)


def pgd(
    loss: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    epsilon: float,
    step_size: float,
    steps: int,
    norm: str = "linf",
    bounds: tuple[float, float] | None = None,
    random_start: bool = False,
    generator: torch.Generator | None = None,
    keep: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Projected gradient ascent on ``loss`` inside the ε-ball around ``x`` (module docstring).

    Args:
        loss: ``loss(x_adv)`` -> per-sample values ``(B,)`` (or a scalar) to maximise; its
            gradient is taken with respect to ``x_adv`` only (no parameter's ``.grad`` changes).
        x: the clean batch ``(B, ...)``; it is not changed.
        epsilon, step_size, steps: the radius ε, the step η and the number of steps.
        norm: ``"linf"`` or ``"l2"``.
        bounds: ``(low, high)`` data range, or None.
        random_start: start at a uniform point of the ball (Madry et al.) instead of ``x``.
        generator: draws the random start.
        keep: ``keep(x_candidate)`` -> ``(B,)`` bool: whether each sample may move there (e.g.
            its predicted label is unchanged). A sample whose step is refused stays where it is
            and stops (FAR Algorithm 1 stops once the label would change; here the flipping step
            is not taken, so every iterate satisfies the constraint, FAR Eq. 4). A random start
            that ``keep`` refuses starts at ``x``. None: every step is taken.

    Returns:
        ``x_adv``, detached, inside the ball and the bounds.
    """
    x = x.detach()
    x_adv = x
    shape = (-1, *([1] * (x.dim() - 1)))
    if random_start:
        x_adv = project(x + _random_start(x, epsilon, norm, generator), x, epsilon, norm, bounds)
        if keep is not None:
            x_adv = torch.where(keep(x_adv).reshape(shape), x_adv, x)
    moving = None if keep is None else torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(steps):
        z = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            value = loss(z)
            (g,) = torch.autograd.grad(value.sum(), z, allow_unused=True)
        if g is None:
            g = torch.zeros_like(z)
        cand = project(z.detach() + step_size * step_direction(g, norm), x, epsilon, norm, bounds)
        if moving is not None and keep is not None:
            moving = moving & keep(cand)
            cand = torch.where(moving.reshape(shape), cand, x_adv)
        x_adv = cand.detach()
    return x_adv


_random_start = random_start
