"""SmoothGrad, NoiseGrad, FusionGrad and VarGrad as Enhancers on the batched engine.

Each class is the enhancer's *factory*: its keyword parameters are the user's options (``wrap()``
routes options by the factory's signature), and the object it builds is called as
``enhancer(explainer, model, inputs, target=None, **attribute_kwargs)``. The estimators
(Bykov et al. 2022; Smilkov et al. 2017; Adebayo et al. 2018 for VarGrad):

.. math::
    E_{SG}(x) = \\frac1N \\sum_{j=1}^N E(x + \\xi_j, f(\\cdot, \\hat W)),\\;
    \\xi_j \\sim \\mathcal N(0, \\sigma_{SG}^2 I),\\;
    \\sigma_{SG} = \\alpha_{SG}(\\max x - \\min x)\\ \\text{(Eq. 4)}

    E_{NG}(x) = \\frac1N \\sum_{i=1}^N E(x, f(\\cdot, \\hat W \\odot \\eta_i)),\\;
    \\eta_i \\sim \\mathcal N(1, \\sigma_{NG}^2 I)\\ \\text{(Eq. 1)}

    E_{FG}(x) = \\frac1M \\sum_{i=1}^M \\frac1N \\sum_{j=1}^N
    E(x + \\xi_{ij}, f(\\cdot, \\hat W \\odot \\eta_i))\\ \\text{(Eq. 2, } \\xi_{ij}
    \\text{ drawn anew per weight sample)}

``aggregate="mean_square"`` gives SmoothGrad² (mean of squared maps), ``aggregate="variance"``
the unbiased sample variance (VarGrad).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from wrapgrad.checks import check_positive_int
from wrapgrad.engine import AGGREGATES, STRATEGIES, monte_carlo
from wrapgrad.errors import WrapgradTypeError, WrapgradValueError
from wrapgrad.protocols import Explainer, TensorOrTuple
from wrapgrad.records import EnhancerSpec
from wrapgrad_noise.perturbers import InputGaussian, WeightMultiplicative

__all__ = ["FusionGrad", "MonteCarloEnhancer", "NoiseGrad", "SmoothGrad", "VarGrad", "specs"]


def _check_sigma(sigma: Any) -> float:
    if isinstance(sigma, str) and sigma == "auto":
        # The calibration plugin plugs in here: sigma="auto" needs an accuracy-drop calibration.
        raise WrapgradValueError(
            "sigma: sigma='auto' needs calibration data: pass calibration=(inputs, labels), or "
            "calibrate first with wrapgrad.calibrate(model, data) and pass its sigma"
        )
    return WeightMultiplicative(sigma).sigma  # validates: a number >= 0


class MonteCarloEnhancer:
    """What every Monte-Carlo enhancer shares: the sample count, aggregation and engine options.

    Args:
        n_samples: N, the number of samples (per weight sample, for FusionGrad).
        aggregate: ``"mean"``, ``"mean_square"`` (SmoothGrad²) or ``"variance"`` (VarGrad).
        seed: makes the draws repeatable (the same seed gives the same maps).
        generator: a ``torch.Generator`` on the inputs' device instead of ``seed``.
        strategy: ``"auto"`` (``"vmap"`` on accelerators for gradient-only methods, else
            ``"loop"``), ``"vmap"`` (stacked weight samples under ``torch.func.vmap``;
            gradient-only methods) or ``"loop"`` (one functional view per weight sample; any
            method).
        max_batch: rows per explainer call (default 128 on CPU, 4096 on CUDA).
        return_samples: also return the per-sample maps: the call returns
            ``(aggregate, samples)`` with ``samples`` of shape ``(S, B, ...)``.
        progress: show a tqdm bar (default: only for long runs); ``False`` silences it.
    """

    name = "monte_carlo"
    n_models = 1

    def __init__(
        self,
        *,
        n_samples: int = 10,
        aggregate: str = "mean",
        seed: int | None = None,
        generator: torch.Generator | None = None,
        strategy: str = "auto",
        max_batch: int | None = None,
        return_samples: bool = False,
        progress: bool | None = None,
    ) -> None:
        self.n_samples = check_positive_int(n_samples, "n_samples")
        if aggregate not in AGGREGATES:
            raise WrapgradValueError(
                f"aggregate: expected 'mean', 'mean_square' or 'variance', got {aggregate!r}"
            )
        self.aggregate = aggregate
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise WrapgradTypeError(f"seed: expected an int or None, got {seed!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise WrapgradTypeError(
                f"generator: expected a torch.Generator, got {type(generator).__name__}"
            )
        if seed is not None and generator is not None:
            raise WrapgradValueError("seed: pass either seed= or generator=, not both")
        self.seed = seed
        self.generator = generator
        if strategy not in STRATEGIES:
            raise WrapgradValueError(
                f"strategy: expected 'auto', 'vmap' or 'loop', got {strategy!r}"
            )
        self.strategy = strategy
        self.max_batch = None if max_batch is None else check_positive_int(max_batch, "max_batch")
        self.return_samples = bool(return_samples)
        self.progress = progress
        self.weight_noise: WeightMultiplicative | None = None
        self.input_noise: InputGaussian | None = None

    def _check_count(self) -> None:
        if self.aggregate == "variance" and self.n_models * self.n_samples < 2:
            raise WrapgradValueError(
                f"n_samples: the unbiased variance needs at least 2 samples, got "
                f"{self.n_models * self.n_samples}"
            )

    def __call__(
        self,
        explainer: Explainer,
        model: nn.Module,
        inputs: TensorOrTuple,
        target: Any = None,
        **attribute_kwargs: Any,
    ) -> Any:
        if self.weight_noise is not None:
            self.weight_noise.parameter_names(model)  # a pattern matching nothing fails here
        return monte_carlo(
            explainer,
            model,
            inputs,
            target,
            weight_sampler=self.weight_noise,
            input_sampler=self.input_noise,
            n_models=self.n_models if self.weight_noise is not None else 1,
            n_inputs=self._inputs_per_model(),
            aggregate=self.aggregate,
            generator=self.generator,
            seed=self.seed,
            strategy=self.strategy,
            max_batch=self.max_batch,
            return_samples=self.return_samples,
            progress=self.progress,
            attribute_kwargs=attribute_kwargs,
        )

    def _inputs_per_model(self) -> int:
        if self.weight_noise is None:
            return self.n_models * self.n_samples
        return self.n_samples

    def __repr__(self) -> str:
        noise = ", ".join(repr(p) for p in (self.weight_noise, self.input_noise) if p is not None)
        return (
            f"{type(self).__name__}(n_samples={self.n_samples}, aggregate={self.aggregate!r}"
            f"{', ' + noise if noise else ''})"
        )


class SmoothGrad(MonteCarloEnhancer):
    """SmoothGrad (Smilkov et al. 2017; Bykov et al. 2022 background): average explanations of
    ``N`` noisy inputs ``x + ξ_j``, ξ_j ~ N(0, σ²I), σ = ``noise_level``·(max x − min x) per sample
    (Eq. 4) or an absolute ``input_sigma``.

    Args:
        n_samples: N (default 10, enough for all methods in the paper's experiments).
        noise_level: α_SG (default 0.2, the paper's choice within the recommended [0.1, 0.2]).
        input_sigma: an absolute input standard deviation (Captum NoiseTunnel's ``stdevs``);
            overrides ``noise_level``.
        aggregate: ``"mean"`` (SmoothGrad), ``"mean_square"`` (SmoothGrad²) or ``"variance"``.
        Others: see :class:`MonteCarloEnhancer`.

    Example::

        explain = wrapgrad.wrap(model, "saliency", enhancer="smoothgrad", noise_level=0.15, seed=0)
    """

    name = "smoothgrad"

    def __init__(
        self,
        n_samples: int = 10,
        noise_level: float = 0.2,
        input_sigma: float | None = None,
        aggregate: str = "mean",
        seed: int | None = None,
        generator: torch.Generator | None = None,
        strategy: str = "auto",
        max_batch: int | None = None,
        return_samples: bool = False,
        progress: bool | None = None,
    ) -> None:
        super().__init__(
            n_samples=n_samples,
            aggregate=aggregate,
            seed=seed,
            generator=generator,
            strategy=strategy,
            max_batch=max_batch,
            return_samples=return_samples,
            progress=progress,
        )
        self.input_noise = InputGaussian(noise_level=noise_level, input_sigma=input_sigma)
        self._check_count()


class VarGrad(SmoothGrad):
    """VarGrad (Adebayo et al. 2018): the unbiased variance of explanations of ``N`` noisy inputs,

    .. math:: \\frac1{N-1} \\sum_j \\bigl(E(x+\\xi_j) - \\bar E\\bigr)^2,

    with the noise of :class:`SmoothGrad`. ``n_samples`` must be at least 2.
    """

    name = "vargrad"

    def __init__(
        self,
        n_samples: int = 10,
        noise_level: float = 0.2,
        input_sigma: float | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        strategy: str = "auto",
        max_batch: int | None = None,
        return_samples: bool = False,
        progress: bool | None = None,
    ) -> None:
        super().__init__(
            n_samples=n_samples,
            noise_level=noise_level,
            input_sigma=input_sigma,
            aggregate="variance",
            seed=seed,
            generator=generator,
            strategy=strategy,
            max_batch=max_batch,
            return_samples=return_samples,
            progress=progress,
        )


class NoiseGrad(MonteCarloEnhancer):
    """NoiseGrad (Bykov et al. 2022, Eq. 1): average explanations of ``N`` models with
    multiplicative weight noise ``Ŵ ⊙ η_i``, η_i ~ N(1, σ²I), evaluated functionally (the user's
    model is never copied or edited).

    Args:
        n_samples: N weight samples (default 10).
        sigma: σ_NG (default 0.2; the paper picks σ for a ~5% relative accuracy drop and finds
            [0.2, 0.4] visually best; ``wrapgrad.calibrate`` finds it for your model).
        include: parameter name patterns to perturb (globs such as ``"features.*"`` or
            ``"re:<regex>"``); default: every floating-point parameter.
        exclude: parameter name patterns to leave unperturbed.
        module_types: perturb only parameters of modules of these types.
        aggregate: ``"mean"``, ``"mean_square"`` or ``"variance"``.
        Others: see :class:`MonteCarloEnhancer`.

    Example::

        explain = wrapgrad.wrap(model, "integrated_gradients", enhancer="noisegrad",
                                n_samples=20, sigma=0.2, seed=0)
    """

    name = "noisegrad"

    def __init__(
        self,
        n_samples: int = 10,
        sigma: float = 0.2,
        include: str | Iterable[str] | None = None,
        exclude: str | Iterable[str] | None = None,
        module_types: type | Iterable[type] | None = None,
        aggregate: str = "mean",
        seed: int | None = None,
        generator: torch.Generator | None = None,
        strategy: str = "auto",
        max_batch: int | None = None,
        return_samples: bool = False,
        progress: bool | None = None,
    ) -> None:
        super().__init__(
            n_samples=n_samples,
            aggregate=aggregate,
            seed=seed,
            generator=generator,
            strategy=strategy,
            max_batch=max_batch,
            return_samples=return_samples,
            progress=progress,
        )
        self.weight_noise = WeightMultiplicative(
            _check_sigma(sigma), include=include, exclude=exclude, module_types=module_types
        )
        self.n_models = self.n_samples
        self._check_count()

    def _inputs_per_model(self) -> int:
        return 1


class FusionGrad(MonteCarloEnhancer):
    """FusionGrad (Bykov et al. 2022, Eq. 2): ``M`` weight samples × ``N`` noisy inputs each,

    .. math::
        E_{FG}(x) = \\frac1M \\sum_{i=1}^M \\frac1N \\sum_{j=1}^N
        E\\bigl(x + \\xi_{ij}, f(\\cdot, \\hat W \\odot \\eta_i)\\bigr),\\quad
        \\eta_i \\sim \\mathcal N(1, \\sigma_{NG}^2 I),\\;
        \\xi_{ij} \\sim \\mathcal N(0, \\sigma_{SG}^2 I).

    The input noise ξ_ij is drawn anew for each weight sample (Eq. 2 writes one set ξ_j shared
    by all models; both estimate the same expectation).
    Eq. 2 names the counts the other way round; here ``n_models`` is always the number of weight
    samples and ``n_samples`` the number of noisy inputs per weight sample.

    Defaults follow the paper's FusionGrad heuristic of halving both noise levels found for
    SmoothGrad and NoiseGrad (main text, "Heuristics for hyperparameter setting"): α_SG =
    0.2 / 2 = 0.1 and σ_NG = 0.2 / 2 = 0.1, with M = N = 10 (appendix: "only 10 samples for both
    N and M are enough"). For a model-specific σ_NG use ``wrapgrad.calibrate``.

    Args:
        n_samples: N, noisy inputs per weight sample (default 10).
        n_models: M, weight samples (default 10).
        sigma: σ_NG (default 0.1).
        noise_level: α_SG (default 0.1); or ``input_sigma`` for an absolute input std.
        include, exclude, module_types: the parameters to perturb (see :class:`NoiseGrad`).
        aggregate: ``"mean"``, ``"mean_square"`` or ``"variance"`` over all M·N samples.
        Others: see :class:`MonteCarloEnhancer`.
    """

    name = "fusiongrad"

    def __init__(
        self,
        n_samples: int = 10,
        n_models: int = 10,
        sigma: float = 0.1,
        noise_level: float = 0.1,
        input_sigma: float | None = None,
        include: str | Iterable[str] | None = None,
        exclude: str | Iterable[str] | None = None,
        module_types: type | Iterable[type] | None = None,
        aggregate: str = "mean",
        seed: int | None = None,
        generator: torch.Generator | None = None,
        strategy: str = "auto",
        max_batch: int | None = None,
        return_samples: bool = False,
        progress: bool | None = None,
    ) -> None:
        super().__init__(
            n_samples=n_samples,
            aggregate=aggregate,
            seed=seed,
            generator=generator,
            strategy=strategy,
            max_batch=max_batch,
            return_samples=return_samples,
            progress=progress,
        )
        self.n_models = check_positive_int(n_models, "n_models")
        self.weight_noise = WeightMultiplicative(
            _check_sigma(sigma), include=include, exclude=exclude, module_types=module_types
        )
        self.input_noise = InputGaussian(noise_level=noise_level, input_sigma=input_sigma)
        self._check_count()


def specs() -> Iterator[EnhancerSpec]:
    """The enhancer specs this plugin contributes."""
    yield EnhancerSpec(
        name="smoothgrad",
        factory=SmoothGrad,
        summary="SmoothGrad: mean over noisy inputs (aggregate='mean_square' for SmoothGrad^2).",
        levels={"noise_level": "input"},
    )
    yield EnhancerSpec(
        name="noisegrad",
        factory=NoiseGrad,
        summary="NoiseGrad: mean over multiplicative weight-noise samples (Bykov et al. 2022).",
        levels={"sigma": "weight"},
    )
    yield EnhancerSpec(
        name="fusiongrad",
        factory=FusionGrad,
        summary="FusionGrad: M weight samples x N noisy inputs each (Bykov et al. 2022, Eq. 2).",
        levels={"sigma": "weight", "noise_level": "input"},
        calibrator="halve",
    )
    yield EnhancerSpec(
        name="vargrad",
        factory=VarGrad,
        summary="VarGrad: unbiased variance of explanations over noisy inputs.",
        levels={"noise_level": "input"},
    )
