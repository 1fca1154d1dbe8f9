"""Noise sources: Gaussian input noise (SmoothGrad) and multiplicative weight noise (NoiseGrad).

:class:`InputGaussian` follows :class:`wrapgrad.protocols.InputPerturber` and
:class:`WeightMultiplicative` follows :class:`wrapgrad.protocols.WeightPerturber`:
``sample(value, n, *, generator=None)`` returns ``n`` perturbed copies stacked on a new leading
axis, drawn from ``generator`` only (``guide=`` optionally scales the noise element-wise).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from wrapgrad.checks import check_nonnegative, check_positive_int
from wrapgrad.errors import WrapgradValueError
from wrapgrad_noise.kernels import (
    gaussian_input_noise,
    multiplicative_weight_noise,
    per_sample_sigma,
    select_parameters,
)

__all__ = ["InputGaussian", "WeightMultiplicative", "check_level"]


def check_level(value: Any, argument: str) -> float:
    """A noise level (``sigma``, ``noise_level``, ``input_sigma``) as a float ``>= 0``; the one
    message for ``"auto"`` given where no calibration can happen."""
    if isinstance(value, str) and value == "auto":
        raise WrapgradValueError(
            f"{argument}: {argument}='auto' needs calibration data: pass "
            f"calibration=(inputs, labels) to wrapgrad.wrap (held-out tensors or a DataLoader), "
            f"or calibrate first with wrapgrad.calibrate(model, data) and pass the level it finds"
        )
    return check_nonnegative(value, argument)


class _NoiseSource:
    """What both noise sources share: :meth:`sample` draws with the source's kernel (a function
    of :mod:`wrapgrad_noise.kernels`) at the source's scale for the value (:meth:`_scale`)."""

    _kernel: ClassVar[Callable[..., Tensor]]

    def _scale(self, value: Tensor) -> float | Tensor:
        """σ for ``value``: a float, or a tensor broadcasting to it."""
        raise NotImplementedError

    def sample(
        self,
        value: Tensor,
        n: int,
        *,
        generator: torch.Generator | None = None,
        guide: Tensor | None = None,
    ) -> Tensor:
        """``n`` perturbed copies of ``value`` stacked on a new leading axis: shape
        ``(n, *value.shape)`` (for inputs ``value`` is the batch ``(B, ...)``, for weights one
        weight tensor); ``guide`` scales the noise element-wise."""
        n = check_positive_int(n, "n")
        return self._kernel(value, n, self._scale(value), generator=generator, guide=guide)


class InputGaussian(_NoiseSource):
    """Additive Gaussian input noise ``x + ξ``, ξ ~ N(0, σ²I) (SmoothGrad).

    σ is relative to each sample's range (Bykov et al. 2022, Eq. 4),

    .. math:: \\sigma_{SG} = \\alpha_{SG}\\,(\\max(x) - \\min(x)),

    or an absolute ``input_sigma`` (Captum NoiseTunnel's ``stdevs``).

    Args:
        noise_level: α_SG (default 0.2, the paper's choice in the recommended [0.1, 0.2]).
        input_sigma: an absolute standard deviation instead of α_SG (overrides ``noise_level``).

    Example::

        p = InputGaussian(noise_level=0.1)
        noisy = p.sample(x, 10, generator=torch.Generator().manual_seed(0))  # (10, *x.shape)
    """

    target = "input"
    _kernel = staticmethod(gaussian_input_noise)

    def __init__(self, noise_level: float = 0.2, input_sigma: float | None = None) -> None:
        self.noise_level = check_level(noise_level, "noise_level")
        self.input_sigma = None if input_sigma is None else check_level(input_sigma, "input_sigma")

    @property
    def is_zero(self) -> bool:
        """True when the noise is switched off (σ = 0): samples are exact copies."""
        return (self.input_sigma if self.input_sigma is not None else self.noise_level) == 0.0

    def sigma(self, x: Tensor) -> float | Tensor:
        """The standard deviation for the batch ``x`` (float, or ``(B, 1, ..., 1)`` per sample)."""
        if self.input_sigma is not None:
            return self.input_sigma
        if self.noise_level == 0.0:
            return 0.0
        return per_sample_sigma(x, self.noise_level)

    def _scale(self, value: Tensor) -> float | Tensor:
        """:meth:`sigma` of the batch ``value`` ``(B, ...)``, which must have a batch axis."""
        if value.dim() == 0:
            raise WrapgradValueError("value: expected a batch-first tensor, got a scalar")
        return self.sigma(value)

    def __repr__(self) -> str:
        what = (
            f"input_sigma={self.input_sigma}"
            if self.input_sigma is not None
            else f"noise_level={self.noise_level}"
        )
        return f"InputGaussian({what})"


class WeightMultiplicative(_NoiseSource):
    """Multiplicative weight noise ``W ⊙ η``, η ~ N(1, σ²I) element-wise (NoiseGrad;
    Bykov et al. 2022, Eq. 1 and the text below it).

    Args:
        sigma: σ_NG, the weight-noise standard deviation (default 0.2).
        include: parameter name patterns to perturb (globs like ``"features.*"``, or
            ``"re:<regex>"``); None perturbs every floating-point parameter.
        exclude: name patterns to leave unperturbed.
        module_types: perturb only parameters of modules of these types (e.g. ``nn.Conv2d``).

    A pattern that matches no parameter raises an error naming the option, when the model is
    first seen (:meth:`parameter_names`).

    Example::

        p = WeightMultiplicative(sigma=0.2, include="*.weight")
        stacks = p.sample_parameters(model, 8, generator=g)  # name -> (8, *shape)
        out = torch.func.functional_call(model, {k: v[0] for k, v in stacks.items()}, (x,))
    """

    target = "weight"
    _kernel = staticmethod(multiplicative_weight_noise)

    def __init__(
        self,
        sigma: float = 0.2,
        *,
        include: str | Iterable[str] | None = None,
        exclude: str | Iterable[str] | None = None,
        module_types: type | Iterable[type] | None = None,
    ) -> None:
        self.sigma = check_level(sigma, "sigma")
        self.include = include
        self.exclude = exclude
        self.module_types = module_types

    @property
    def is_zero(self) -> bool:
        """True when σ = 0: samples are exact copies of the weights."""
        return self.sigma == 0.0

    def parameter_names(self, model: nn.Module) -> list[str]:
        """The qualified names of ``model``'s parameters this perturber perturbs."""
        return select_parameters(
            model, include=self.include, exclude=self.exclude, module_types=self.module_types
        )

    def _scale(self, value: Tensor) -> float:
        """σ_NG, the same for every weight tensor."""
        return self.sigma

    def sample_parameters(
        self,
        model: nn.Module,
        n: int,
        *,
        generator: torch.Generator | None = None,
        names: list[str] | None = None,
    ) -> dict[str, Tensor]:
        """``n`` stacked parameter samples of ``model``: name -> ``(n, *shape)``, without touching
        the model. Only the selected parameters appear (others keep the model's own tensors
        when passed to :func:`torch.func.functional_call` with ``strict=False``).

        Draws happen in ``named_parameters`` order, so the same generator state gives the same
        samples.
        """
        n = check_positive_int(n, "n")
        names = self.parameter_names(model) if names is None else names
        params = dict(model.named_parameters())
        with torch.no_grad():
            return {name: self.sample(params[name], n, generator=generator) for name in names}

    def __repr__(self) -> str:
        sel: list[str] = []
        for key in ("include", "exclude", "module_types"):
            v: Any = getattr(self, key)
            if v is not None:
                sel.append(f"{key}={v!r}")
        return f"WeightMultiplicative(sigma={self.sigma}{''.join(', ' + s for s in sel)})"
