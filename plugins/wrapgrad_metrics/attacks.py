"""Attribution attacks: IFIA (Ghorbani et al. 2019; FAR Algorithm 1) and Adversarial IFIA (FAR
Algorithm 2).

IFIA maximises a dissimilarity ``D`` between the normalised importance ``I`` of the map at the
perturbed input and the one at the original input, inside an ε-ball, keeping the prediction:

.. math::
    \\max_{\\|\\delta\\|_p \\le \\varepsilon} D(x, x+\\delta)
    \\quad \\text{s.t.} \\quad \\arg\\max f(x+\\delta) = \\arg\\max f(x),

    D = \\begin{cases} -\\sum_{i \\in B} I(x+\\delta)_i & \\text{top-k } (B = \\mathrm{top}_k I(x)) \\\\
    \\sum_{i \\in A} I(x+\\delta)_i & \\text{targeted (region } A) \\\\
    \\|C(I(x+\\delta)) - C(I(x))\\|_2 & \\text{mass center} \\end{cases}

with steps :math:`x \\leftarrow \\mathrm{Project}_p(x + \\eta\\,\\mathrm{Normalize}_p(\\nabla D))`
(FAR Algorithm 1, lines 3-5). A step that flips the label is rejected (and that sample's step
size halved); the iterate with the largest ``D`` measured with ``explain`` is returned (Ghorbani
et al.). ReLU networks are differentiated through their softplus(β) twin
(:class:`~wrapgrad_metrics.softplus.SoftplusMode`, FAR Sec. 4). Adversarial IFIA (FAR Algorithm 2)
ascends :math:`\\ell(x+\\delta, t) + \\lambda D` without the label constraint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from wrapgrad.adversarial import check_norm
from wrapgrad.checks import check_positive
from wrapgrad.errors import WrapgradTypeError, WrapgradValueError
from wrapgrad.evaluation import AttackResult
from wrapgrad_metrics.functional import (
    kendall_tau,
    mass_center,
    normalized_importance,
    resolve_k,
    spearman_rho,
    topk_intersection,
    topk_mask,
)
from wrapgrad_metrics.surrogate import (
    Ball,
    check_bounds,
    check_surrogate,
    explain_map,
    first_map,
    grad_or_zeros,
    predict,
    resolve_target,
    spsa_gradient,
    surrogate_ascent,
)

__all__ = ["IFIA", "AdversarialIFIA", "check_norm", "importance_of"]

_OBJECTIVES = ("topk", "mass_center", "targeted")


def importance_of(maps: Any, channel_reduction: str | None = "auto") -> Tensor:
    """Ghorbani's normalised importance of a batch of maps; ``"auto"`` sums magnitudes over the
    channel axis of ``(B, C, H, W...)`` maps and takes magnitudes of anything else."""
    maps = first_map(maps)
    if channel_reduction == "auto":
        channel_reduction = "sum_abs" if maps.dim() >= 4 else None
    return normalized_importance(maps, channel_reduction)


class _Dissimilarity:
    """``D(I)`` for one batch, given the importance at the original inputs."""

    def __init__(self, objective: str, imp0: Tensor, k: int, region: Tensor | None) -> None:
        self.objective = objective
        flat = imp0.reshape(imp0.shape[0], -1)
        if objective == "topk":
            self.top = topk_mask(flat, k).to(imp0.dtype)
        elif objective == "mass_center":
            self.center = mass_center(imp0)
        else:
            if region is None:
                raise WrapgradValueError(
                    "target_region: the targeted objective needs target_region= (a boolean mask "
                    "of the map's spatial shape)"
                )
            region = torch.as_tensor(region, device=imp0.device)
            shape = tuple(imp0.shape)
            if tuple(region.shape) not in (shape, shape[1:]):
                raise WrapgradValueError(
                    f"target_region: expected a mask of shape {shape[1:]} or {shape} (the map's "
                    f"spatial shape after channel reduction), got {tuple(region.shape)}"
                )
            self.region = region.to(imp0.dtype).expand(shape).reshape(shape[0], -1)

    def __call__(self, imp: Tensor) -> Tensor:
        flat = imp.reshape(imp.shape[0], -1)
        if self.objective == "topk":
            return -(flat * self.top.to(flat.dtype)).sum(dim=1)
        if self.objective == "targeted":
            return (flat * self.region.to(flat.dtype)).sum(dim=1)
        diff = mass_center(imp) - self.center.to(imp.dtype)
        return torch.sqrt((diff * diff).sum(dim=1) + 1e-20)


class IFIA:
    """Ghorbani et al.'s iterative feature-importance attack (FAR Algorithm 1), batched.

    Args:
        objective: ``"topk"``, ``"mass_center"`` or ``"targeted"`` (needs ``target_region``).
        epsilon: the ball's radius ε (FAR Table 2: 0.3 on MNIST, 0.03 on CIFAR-10).
        step_size: η; default ``1.2 * epsilon / steps`` (FAR Table 2: relative step 1.2/7 with 7
            steps).
        steps: iterations N per restart.
        restarts: restart 0 starts at x, the others at a uniform point of the ball (FAR Table 2:
            3 restarts).
        k: features in the top-k objective and the IN score: an int count (FAR Table 2: 50 on
            MNIST) or a float fraction in (0, 1]; default 5% of the features.
        beta: the softplus tightness β of the ReLU twin used for the attack gradient (FAR: 1.0);
            ``None`` differentiates the network as it is.
        norm: ``"linf"`` or ``"l2"``.
        bounds: the data range ``(low, high)`` to clip to, e.g. ``(0.0, 1.0)``; None: no clipping.
        target_region: for ``"targeted"``: a boolean mask of the map's spatial shape.
        channel_reduction: how maps become importance: ``"auto"`` (sum of magnitudes over
            channels of image maps), or see :func:`~wrapgrad_metrics.functional.reduce_channels`.
        surrogate: ``"auto"`` (a differentiable version of explain's method where known, else
            SPSA through explain), ``"spsa"``, or a callable ``(forward, x, target) -> map``.
        spsa_samples: SPSA directions per step for the gradient-free fallback.
        seed: seeds the restarts and SPSA draws.
        progress: show a tqdm bar (None: only on a terminal; False: never).
    """

    reject_label_flips = True
    lam: float = 1.0
    """Weight of ``D`` against the extra loss (used by :class:`AdversarialIFIA`)."""

    def __init__(
        self,
        objective: str = "topk",
        *,
        epsilon: float = 0.1,
        step_size: float | None = None,
        steps: int = 20,
        restarts: int = 1,
        k: int | None = None,
        beta: float | None = 1.0,
        norm: str = "linf",
        bounds: tuple[float, float] | None = None,
        target_region: Tensor | None = None,
        channel_reduction: str | None = "auto",
        surrogate: str | Callable[..., Tensor] = "auto",
        spsa_samples: int = 8,
        seed: int = 0,
        progress: bool | None = None,
    ) -> None:
        if objective not in _OBJECTIVES:
            raise WrapgradValueError(f"objective: expected one of {_OBJECTIVES}, got {objective!r}")
        self.objective = objective
        self.epsilon = check_positive(epsilon, "epsilon")
        for name, value in (
            ("steps", steps),
            ("restarts", restarts),
            ("spsa_samples", spsa_samples),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise WrapgradValueError(f"{name}: expected a positive int, got {value!r}")
        self.steps = steps
        self.restarts = restarts
        self.step_size = (
            1.2 * self.epsilon / steps
            if step_size is None
            else check_positive(step_size, "step_size")
        )
        if k is not None and (
            isinstance(k, bool)
            or not isinstance(k, (int, float))
            or (isinstance(k, int) and k < 1)
            or (isinstance(k, float) and not 0.0 < k <= 1.0)
        ):
            raise WrapgradValueError(
                f"k: expected a positive int count, a float fraction in (0, 1], or None, got {k!r}"
            )
        self.k = k
        if beta is not None:
            check_positive(beta, "beta")
        self.beta = beta
        self.norm = check_norm(norm)
        self.bounds = check_bounds(bounds, torch.zeros(0))
        self.target_region = target_region
        if objective == "targeted" and target_region is None:
            raise WrapgradValueError(
                "target_region: the targeted objective needs target_region= (a boolean mask of "
                "the map's spatial shape)"
            )
        self.channel_reduction = channel_reduction
        self.surrogate = check_surrogate(surrogate)
        self.spsa_samples = spsa_samples
        self.seed = seed
        self.progress = progress

    # ------------------------------------------------------------------------------------------
    def _extra_loss(self, model: Callable[..., Tensor], x: Tensor, t: Tensor) -> Tensor | None:
        return None

    def __call__(
        self, model: Callable[..., Tensor], inputs: Tensor, target: Any, explain: Callable[..., Any]
    ) -> AttackResult:
        if not callable(explain):
            raise WrapgradTypeError(
                f"explain: expected what wrapgrad.wrap returns, got {type(explain).__name__}"
            )
        x = inputs.detach()
        t = resolve_target(model, x, target)
        labels0 = predict(model, x)
        check_bounds(self.bounds, x)

        def measure(xa: Tensor) -> Tensor:
            return importance_of(explain_map(explain, xa, t), self.channel_reduction)

        maps_before = explain_map(explain, x, t)
        imp0 = importance_of(maps_before, self.channel_reduction)
        n_features = imp0[0].numel()
        k = resolve_k(0.05 if self.k is None else self.k, n_features)
        dissim = _Dissimilarity(self.objective, imp0.to(torch.float64), k, self.target_region)

        def value(xa: Tensor, imp: Tensor) -> Tensor:
            v = dissim(imp.to(torch.float64))
            with torch.no_grad():
                extra = self._extra_loss(model, xa, t)
            return v if extra is None else extra.detach().to(torch.float64) + self.lam * v

        map_fn, forward = surrogate_ascent(model, explain, self.surrogate, self.beta)
        generator = torch.Generator().manual_seed(self.seed)

        def gradient(xa: Tensor) -> Tensor:
            if map_fn is not None:
                z = xa.detach().clone().requires_grad_(True)
                imp = importance_of(map_fn(forward, z, t), self.channel_reduction)
                obj = dissim(imp.to(torch.float64))
                extra = self._extra_loss(model, z, t)
                total = obj if extra is None else extra.to(torch.float64) + self.lam * obj
                return grad_or_zeros(total, z)
            return spsa_gradient(
                lambda z: value(z, measure(z)),
                xa.detach(),
                generator=generator,
                n_samples=self.spsa_samples,
                delta=self.epsilon * 1e-2,
            )

        before = value(x, imp0)
        best_x = x.clone()
        best_val = before.clone()
        shape = (-1, *([1] * (x.dim() - 1)))
        bar = tqdm(
            total=self.restarts * self.steps,
            disable=None if self.progress is None else not self.progress,
            desc="ifia",
        )
        # starts keep the label; steps too where flips are rejected (IFIA, not Adversarial IFIA)
        ball = Ball(model, x, self.epsilon, self.norm, self.bounds, labels0)
        kept = labels0 if self.reject_label_flips else None
        steps = Ball(model, x, self.epsilon, self.norm, self.bounds, kept)
        try:
            for r in range(self.restarts):
                if r == 0 and self.objective != "mass_center":
                    xa = x.clone()
                else:
                    xa, _ = ball.start(generator, 0.01 if r == 0 else 1.0)
                eta = torch.full((x.shape[0],), self.step_size, dtype=x.dtype, device=x.device)
                for _ in range(self.steps):
                    xa, _, eta = steps.step(xa, gradient(xa), eta)
                    # Every iterate keeps the label where flips are rejected: the start does,
                    # and a step is only taken if the new point does.
                    val = value(xa, measure(xa))
                    better = val > best_val
                    best_x = torch.where(better.reshape(shape), xa, best_x)
                    best_val = torch.where(better, val, best_val)
                    bar.update(1)
        finally:
            bar.close()

        maps_after = explain_map(explain, best_x, t)
        imp_after = importance_of(maps_after, self.channel_reduction).detach()
        metrics = {
            "topk_intersection": topk_intersection(imp0, imp_after, k),
            "kendall_tau": kendall_tau(imp0, imp_after),
            "spearman_rho": spearman_rho(imp0, imp_after),
        }
        return AttackResult(
            inputs=best_x,
            original=x,
            target=t,
            maps_before=maps_before,
            maps_after=maps_after,
            objective_before=before,
            objective_after=value(best_x, imp_after),
            metrics=metrics,
            labels_before=labels0,
            labels_after=predict(model, best_x),
            epsilon=self.epsilon,
            norm=self.norm,
            objective=self.objective,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(objective={self.objective!r}, epsilon={self.epsilon}, "
            f"steps={self.steps}, restarts={self.restarts}, norm={self.norm!r})"
        )


class AdversarialIFIA(IFIA):
    """FAR's Adversarial IFIA (Algorithm 2): ascend
    :math:`\\ell(x+\\delta, t) + \\lambda\\, D(x, x+\\delta)` (cross-entropy plus the attribution
    dissimilarity) for N steps, without the label constraint. Same arguments as :class:`IFIA`,
    plus ``lam`` (λ, FAR Table 3: 0.5 on MNIST)."""

    reject_label_flips = False

    def __init__(self, objective: str = "topk", *, lam: float = 0.5, **kwargs: Any) -> None:
        super().__init__(objective, **kwargs)
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or lam < 0:
            raise WrapgradValueError(f"lam: expected a non-negative number, got {lam!r}")
        self.lam = float(lam)

    def _extra_loss(self, model: Callable[..., Tensor], x: Tensor, t: Tensor) -> Tensor | None:
        out = model(x)
        return F.cross_entropy(out.reshape(out.shape[0], -1), t, reduction="none")
