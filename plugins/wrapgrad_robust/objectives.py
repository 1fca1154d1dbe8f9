"""The FAR objective family (Ivankay et al., Sec. 3.1) and its six named instances.

FAR writes every attribution-robust training objective as one of two min-max problems,

.. math::
    \\text{Eq. 5:}\\quad \\min_\\theta \\sum_x \\Big\\{ \\ell(x, y) + \\lambda
        \\max_{\\|\\tilde x - x\\|_p < \\varepsilon} d_s\\big[S(\\tilde x), S_T(x)\\big] \\Big\\}

    \\text{Eq. 6:}\\quad \\min_\\theta \\sum_x \\max_{\\|\\tilde x - x\\|_p < \\varepsilon}
        \\Big\\{ \\ell(\\tilde x, y) + \\lambda\\, d_s\\big[S(\\tilde x), S_T(x)\\big] \\Big\\}

with ``S`` a differentiable attribution (:mod:`wrapgrad.differentiable`), ``S_T`` its map at the
clean input, ``d_s`` a dissimilarity (:mod:`wrapgrad_robust.dissimilarity`), and the inner
maximum found by projected ascent (:func:`wrapgrad.adversarial.pgd`): IFIA (FAR Algorithm 1;
a sample stops where its next step would flip its label) for Eq. 5, Adversarial IFIA
(Algorithm 2) for Eq. 6.
:class:`FarObjective` is that family; the registered names fix its parameters:

=============== ====== ======================================= ==============================
name            form   S, S_T                                  d_s, inner ascent
=============== ====== ======================================= ==============================
``natural``     --     none (λ = 0, no inner maximisation)      --
``pgd``         Eq. 6  none (λ = 0: Madry, FAR Eq. 7)           cross-entropy
``ig_norm``     Eq. 5  IG of the loss, baseline x; S_T = 0      L1 (RAR IG-NORM, FAR Eq. 8)
``ig_sum_norm`` Eq. 6  IG of the loss, baseline x; S_T = 0      L1, λ = β (RAR IG-SUM-NORM)
``aat``         Eq. 5  IG of the logit, baseline 0              PCL (FAR Eq. 10); IFIA top-k
``adv_aat``     Eq. 6  IG of the logit, baseline 0              PCL (FAR Eq. 11); top-k + CE
=============== ====== ======================================= ==============================

RAR's IG (Chen et al. 2019) attributes the per-sample loss
:math:`\\ell_y` along the path from ``x`` to ``x'``, so completeness gives
:math:`\\sum_i \\mathrm{IG}_i(x, x') = \\ell(x') - \\ell(x)` and IG(x, x) = 0.

The inner ascent of AAT/AdvAAT follows FAR's evaluation IFIA ("the parameters of IFIA during
training are kept as during evaluation", Table 2): the top-k dissimilarity with ``k = 50``, 7
steps of 1.2 ε / 7, and ReLU second derivatives from softplus(β = 1) (FAR Sec. 4); ``k=None``
ascends ``d_s`` itself, which needs ``random_start=True`` (d_s is stationary at x̃ = x).

Every forward pass of an inner maximisation, and of the attribution term of the loss, runs on
copies of the model's buffers (BatchNorm running statistics change only through the clean or
adversarial cross-entropy forward pass, as in ordinary training); no parameter is changed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wrapgrad.adversarial import attack_options, check_attack
from wrapgrad.adversarial import pgd as projected_ascent
from wrapgrad.checks import (
    check_choice,
    check_nonnegative,
    check_positive,
    check_positive_int,
)
from wrapgrad.differentiable import KERNELS
from wrapgrad.errors import WrapgradValueError
from wrapgrad_robust.dissimilarity import DISSIMILARITIES, dissimilarity, topk_dissimilarity

__all__ = [
    "FarConfig",
    "FarObjective",
    "aat",
    "adv_aat",
    "ig_norm",
    "ig_sum_norm",
    "natural",
    "pgd",
]

MNIST_EPSILON = 0.3
"""FAR Table 2 and Madry et al.: the l_inf budget on MNIST."""


@attrs.frozen(kw_only=True)
class FarConfig:
    """One member of the FAR family (module docstring). Built by the named factories, which
    check every option; :func:`attrs.evolve` makes variants."""

    name: str
    """The registered name (for messages and fingerprints)."""
    robust_loss: bool = False
    """Eq. 6 (the loss at x̃) instead of Eq. 5 (the loss at x)."""
    lam: float = 0.0
    """λ: the weight of the attribution term (in the loss, and in Eq. 6's inner ascent)."""
    explainer: str | None = None
    """``S``: ``"integrated_gradients"``, ``"saliency"``, ``"input_x_gradient"``; None: no
    attribution term (natural, PGD)."""
    dissimilarity: str = "pcl"
    """``d_s`` of the loss: ``"l1"``, ``"pcl"`` or ``"cosine"``."""
    baseline: str = "zero"
    """IG's baseline: ``"zero"`` (S(x̃, 0), FAR) or ``"input"`` (IG(x, x̃), RAR; then S_T = 0)."""
    attributes: str = "logit"
    """What ``S`` explains: the target ``"logit"`` f_y (FAR) or the per-sample ``"loss"`` ℓ_y
    (RAR)."""
    epsilon: float = MNIST_EPSILON
    step_size: float = 0.01
    steps: int = 0
    """Inner ascent steps (0: no inner maximisation, x̃ = x)."""
    norm: str = "linf"
    bounds: tuple[float, float] | None = (0.0, 1.0)
    random_start: bool = False
    keep_label: bool = False
    """FAR Algorithm 1 and Eq. 4: a sample stops where its next step would change its predicted
    label (the flipping step is not taken)."""
    k: int | float | None = None
    """Inner ascent on the top-k dissimilarity with this many features (None: on d_s)."""
    ig_steps: int = 10
    ig_method: str = "gausslegendre"
    softplus_beta: float | None = None
    """FAR's ReLU second-derivative trick in the inner maximisation (None: off)."""

    @property
    def needs_input_gradients(self) -> bool:
        """Whether the objective differentiates the model with respect to its inputs."""
        return self.steps > 0 or self.explainer is not None


def _frozen_buffers(model: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``model`` evaluated on copies of its buffers (so BatchNorm statistics stay as they are);
    ``model`` itself when it has none."""
    if not isinstance(model, nn.Module):
        return model
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    if not buffers:
        return model
    return lambda *args: torch.func.functional_call(model, buffers, args)


class FarObjective:
    """An :class:`~wrapgrad.protocols.Objective` of the FAR family.

    ``objective(model, inputs, target, generator=None)`` returns the batch's scalar loss; after
    each call ``metrics`` holds its parts as detached 0-d tensors: ``loss``, ``ce`` (Eq. 5) or
    ``ce_adv`` (Eq. 6), ``attribution`` (the mean ``d_s``), ``accuracy`` (natural accuracy of
    the batch) and, where there is an adversarial batch, ``adv_accuracy``.
    """

    def __init__(self, config: FarConfig) -> None:
        self.config = config
        self.metrics: dict[str, Tensor] = {}
        self.needs_input_gradients = config.needs_input_gradients

    # -- attribution maps -------------------------------------------------------------------------
    def _maps(
        self, forward: Callable[..., Tensor], z: Tensor, x: Tensor, y: Tensor, *, inner: bool
    ) -> Tensor:
        c = self.config
        options: dict[str, Any] = {
            "create_graph": True,
            "softplus_beta": c.softplus_beta if inner else None,
        }
        if c.explainer == "integrated_gradients":
            options.update(
                n_steps=c.ig_steps,
                method=c.ig_method,
                baselines=x if c.baseline == "input" else None,
            )
        if c.attributes == "loss":

            def per_sample_loss(points: Tensor, labels: Tensor) -> Tensor:
                return F.cross_entropy(forward(points), labels, reduction="none")

            return KERNELS[c.explainer](
                per_sample_loss, z, None, additional_forward_args=(y,), **options
            )
        return KERNELS[c.explainer](forward, z, y, **options)

    def _target_map(self, forward: Callable[..., Tensor], x: Tensor, y: Tensor) -> Tensor:
        """``S_T(x)`` for the inner ascent, detached (zeros where the baseline is the input:
        IG(x, x) = 0 by completeness)."""
        if self.config.baseline == "input":
            return torch.zeros_like(x)
        return self._maps(forward, x, x, y, inner=False).detach()

    # -- the inner maximisation ---------------------------------------------------------------------
    def _inner(
        self,
        forward: Callable[..., Tensor],
        x: Tensor,
        y: Tensor,
        labels: Tensor,
        generator: torch.Generator | None,
    ) -> Tensor:
        c = self.config
        s_t = self._target_map(forward, x, y) if c.explainer is not None else None

        def value(z: Tensor) -> Tensor:
            total = torch.zeros((), dtype=z.dtype, device=z.device)
            if c.robust_loss:
                total = F.cross_entropy(forward(z), y, reduction="none")
            if s_t is not None:
                maps = self._maps(forward, z, x, y, inner=True)
                d = (
                    dissimilarity(c.dissimilarity, maps, s_t)
                    if c.k is None
                    else topk_dissimilarity(maps, s_t, c.k)
                )
                total = total + (c.lam if c.robust_loss else 1.0) * d
            return total

        def label_kept(z: Tensor) -> Tensor:
            with torch.no_grad():
                return forward(z).argmax(dim=1) == labels

        keep = label_kept if c.keep_label else None
        return projected_ascent(value, x, **attack_options(c, generator=generator, keep=keep))

    # -- the loss ----------------------------------------------------------------------------------------
    def __call__(
        self,
        model: Callable[..., Tensor],
        inputs: Tensor,
        target: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        c = self.config
        x = inputs.detach()
        y = target
        if c.bounds is not None and c.needs_input_gradients:
            low, high = c.bounds
            if bool((x < low).any()) or bool((x > high).any()):
                raise WrapgradValueError(
                    f"bounds: the inputs lie outside {c.bounds} (min {float(x.min()):.4g}, max "
                    f"{float(x.max()):.4g}); pass the data range as bounds=, or bounds=None"
                )
        forward = _frozen_buffers(model)
        parts: dict[str, Tensor] = {}
        if c.robust_loss:
            with torch.no_grad():
                labels = forward(x).argmax(dim=1)
        else:
            clean_logits = model(x)
            labels = clean_logits.detach().argmax(dim=1)
        parts["accuracy"] = (labels == y).to(torch.float32).mean()
        x_t = self._inner(forward, x, y, labels, generator) if c.steps > 0 else x
        if c.robust_loss:
            logits = model(x_t)
            ce = F.cross_entropy(logits, y)
            parts["ce_adv"] = ce
            parts["adv_accuracy"] = (logits.detach().argmax(dim=1) == y).to(torch.float32).mean()
        else:
            ce = F.cross_entropy(clean_logits, y)
            parts["ce"] = ce
        loss = ce
        if c.explainer is not None:
            if c.baseline == "input":
                maps = self._maps(forward, x_t, x, y, inner=False)
                d = dissimilarity(c.dissimilarity, maps, torch.zeros_like(maps))
            else:  # S(x̃) and S_T(x) as one batch, both differentiated
                both = self._maps(
                    forward, torch.cat([x_t, x]), torch.cat([x, x]), torch.cat([y, y]), inner=False
                )
                d = dissimilarity(c.dissimilarity, *both.chunk(2))
            d = d.mean()
            parts["attribution"] = d
            loss = ce + c.lam * d
        parts["loss"] = loss
        self.metrics = {k: v.detach() for k, v in parts.items()}
        return loss

    def __repr__(self) -> str:
        shown = {
            k: v
            for k, v in attrs.asdict(self.config).items()
            if v != getattr(attrs.fields(FarConfig), k).default or k == "name"
        }
        return f"FarObjective({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


# -- option checks ---------------------------------------------------------------------------------------
#: The attack options, validated; ``step_size=None``: FAR's IFIA step 1.2 ε / steps (Table 2).
_attack_options = functools.partial(check_attack, default_step=lambda eps, n: 1.2 * eps / n)


def _attribution_options(ig_steps: Any, ig_method: Any, softplus_beta: Any) -> dict[str, Any]:
    from wrapgrad.differentiable import IG_METHODS

    return {
        "ig_steps": check_positive_int(ig_steps, "ig_steps"),
        "ig_method": check_choice(ig_method, "ig_method", IG_METHODS),
        "softplus_beta": None
        if softplus_beta is None
        else check_positive(softplus_beta, "softplus_beta"),
    }


def _check_k(k: Any) -> int | float | None:
    if k is None:
        return None
    from wrapgrad_robust.dissimilarity import resolve_k

    resolve_k(k, 1 << 30)  # type and range
    return k


def _build(config: FarConfig) -> FarObjective:
    c = config
    if c.explainer is not None and c.explainer not in KERNELS:
        raise WrapgradValueError(
            f"explainer: expected one of {sorted(KERNELS)} (differentiable methods), got "
            f"{c.explainer!r}"
        )
    if c.baseline == "input" and c.explainer != "integrated_gradients":
        raise WrapgradValueError("baseline: 'input' is IG's baseline x; use integrated_gradients")
    if c.explainer is not None and not c.robust_loss and c.k is None and not c.random_start:
        raise WrapgradValueError(
            f"random_start: the inner maximisation of {c.name!r} ascends d_s, which is stationary "
            f"at x̃ = x; pass random_start=True (or k= for the top-k ascent)"
        )
    return FarObjective(c)


# -- the named objectives ----------------------------------------------------------------------------------
def natural() -> FarObjective:
    """Cross-entropy on the clean batch: :math:`\\ell(x, y)`."""
    return FarObjective(FarConfig(name="natural"))


def pgd(
    *,
    epsilon: float = MNIST_EPSILON,
    step_size: float = 0.01,
    steps: int = 40,
    random_start: bool = True,
    norm: str = "linf",
    bounds: tuple[float, float] | None = (0.0, 1.0),
) -> FarObjective:
    """Madry et al.'s PGD adversarial training, FAR Eq. 7 (Eq. 6 with λ = 0):
    :math:`\\max_{\\|\\tilde x - x\\| < \\varepsilon} \\ell(\\tilde x, y)`.

    Defaults: Madry's MNIST attack (ε = 0.3, 40 steps of 0.01, random start)."""
    return _build(
        FarConfig(
            name="pgd",
            robust_loss=True,
            **_attack_options(epsilon, step_size, steps, random_start, norm, bounds),
        )
    )


def ig_norm(
    *,
    lam: float = 1.0,
    epsilon: float = MNIST_EPSILON,
    step_size: float = 0.01,
    steps: int = 40,
    random_start: bool = True,
    ig_steps: int = 10,
    ig_method: str = "riemann_right",
    softplus_beta: float | None = None,
    norm: str = "linf",
    bounds: tuple[float, float] | None = (0.0, 1.0),
) -> FarObjective:
    """RAR's IG-NORM (Chen et al. 2019; FAR Eq. 8):
    :math:`\\ell(x, y) + \\lambda \\max_{x'} \\|\\mathrm{IG}^{\\ell_y}(x, x')\\|_1`.

    Defaults: λ = 1 (RAR); the attack as Madry's; IG as RAR's right Riemann sum."""
    return _build(
        FarConfig(
            name="ig_norm",
            lam=check_nonnegative(lam, "lam"),
            explainer="integrated_gradients",
            dissimilarity="l1",
            baseline="input",
            attributes="loss",
            **_attack_options(epsilon, step_size, steps, random_start, norm, bounds),
            **_attribution_options(ig_steps, ig_method, softplus_beta),
        )
    )


def ig_sum_norm(
    *,
    beta: float = 0.1,
    epsilon: float = MNIST_EPSILON,
    step_size: float = 0.01,
    steps: int = 40,
    random_start: bool = True,
    ig_steps: int = 10,
    ig_method: str = "riemann_right",
    softplus_beta: float | None = None,
    norm: str = "linf",
    bounds: tuple[float, float] | None = (0.0, 1.0),
) -> FarObjective:
    """RAR's IG-SUM-NORM: :math:`\\max_{x'} \\{\\ell(x', y) + \\beta \\|\\mathrm{IG}^{\\ell_y}(x,
    x')\\|_1\\}` (FAR Eq. 6 with λ = β, L1, S_T = IG(x, x) = 0). Defaults: β = 0.1 (RAR)."""
    return _build(
        FarConfig(
            name="ig_sum_norm",
            robust_loss=True,
            lam=check_nonnegative(beta, "beta"),
            explainer="integrated_gradients",
            dissimilarity="l1",
            baseline="input",
            attributes="loss",
            **_attack_options(epsilon, step_size, steps, random_start, norm, bounds),
            **_attribution_options(ig_steps, ig_method, softplus_beta),
        )
    )


def _ifia_objective(name: str, robust_loss: bool, doc: str) -> Callable[..., FarObjective]:
    """The factory of AAT (``robust_loss=False``: Eq. 5, IFIA keeps the label) or AdvAAT
    (``robust_loss=True``: Eq. 6), documented by ``doc``: the two take the same options with
    the same defaults (FAR Tables 2-3), declared once here."""

    def factory(
        *,
        lam: float = 0.5,
        epsilon: float = MNIST_EPSILON,
        step_size: float | None = None,
        steps: int = 7,
        k: int | float | None = 50,
        random_start: bool = False,
        ig_steps: int = 10,
        ig_method: str = "gausslegendre",
        softplus_beta: float | None = 1.0,
        dissimilarity: str = "pcl",
        explainer: str = "integrated_gradients",
        norm: str = "linf",
        bounds: tuple[float, float] | None = (0.0, 1.0),
    ) -> FarObjective:
        return _build(
            FarConfig(
                name=name,
                robust_loss=robust_loss,
                lam=check_nonnegative(lam, "lam"),
                explainer=check_choice(explainer, "explainer", sorted(KERNELS)),
                dissimilarity=check_choice(dissimilarity, "dissimilarity", DISSIMILARITIES),
                keep_label=not robust_loss,
                k=_check_k(k),
                **_attack_options(epsilon, step_size, steps, random_start, norm, bounds),
                **_attribution_options(ig_steps, ig_method, softplus_beta),
            )
        )

    factory.__name__ = factory.__qualname__ = name
    factory.__module__ = __name__
    factory.__doc__ = doc
    return factory


aat = _ifia_objective(
    "aat",
    robust_loss=False,
    doc="""FAR's AAT (Eq. 10): :math:`\\ell(x, y) + \\lambda \\max_{\\tilde x}
    \\mathrm{PCL}[\\mathrm{IG}(\\tilde x, 0), \\mathrm{IG}(x, 0)]`, the inner maximum by IFIA
    (Algorithm 1: label kept).

    Defaults: FAR Tables 2-3 on MNIST (λ = 0.5, ε = 0.3, 7 steps of 1.2 ε / 7, top-k with
    k = 50, β = 1). ``step_size=None`` means ``1.2 * epsilon / steps``.""",
)

adv_aat = _ifia_objective(
    "adv_aat",
    robust_loss=True,
    doc="""FAR's AdvAAT (Eq. 11): :math:`\\max_{\\tilde x} \\{\\ell(\\tilde x, y) + \\lambda
    \\mathrm{PCL}[\\mathrm{IG}(\\tilde x, 0), \\mathrm{IG}(x, 0)]\\}`, the inner maximum by
    Adversarial IFIA (Algorithm 2). With ``lam=0`` it is :func:`pgd` (FAR Eq. 7).

    Defaults as :func:`aat` (FAR Table 3: λ = 0.5 on MNIST).""",
)
