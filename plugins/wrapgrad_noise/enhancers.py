"""SmoothGrad, NoiseGrad, FusionGrad and VarGrad as Enhancers on the batched engine.

Each class is the enhancer's *factory*: a frozen attrs record whose fields are the user's options
(its spec declares exactly those names, :func:`option_names`), built once into the engine's
:class:`~wrapgrad.engine.MonteCarloConfig`. The object is called as
``enhancer(explainer, model, inputs, target=None, **attribute_kwargs)``. The options every
enhancer shares are declared once, in :class:`MonteCarloEnhancer`; the noise options once each,
in :class:`InputNoiseOptions` and :class:`WeightNoiseOptions`. The estimators (Bykov et al.
2022; Smilkov et al. 2017; Adebayo et al. 2018 for VarGrad):

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
the unbiased sample variance (VarGrad); ``abs_per_sample=True`` aggregates ``|E|`` of each
draw (the NoiseGrad reference code's order: ``mean |E|``, not ``|mean E|``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import attrs
import torch
from torch import nn

from wrapgrad.checks import check_positive_int
from wrapgrad.engine import MonteCarloConfig, check_perturber, monte_carlo
from wrapgrad.errors import WrapgradValueError
from wrapgrad.protocols import Explainer, TensorOrTuple
from wrapgrad.records import EnhancerSpec
from wrapgrad.registry import get_registry
from wrapgrad_noise.perturbers import InputGaussian, WeightMultiplicative

__all__ = [
    "FusionGrad",
    "InputNoiseOptions",
    "MonteCarloEnhancer",
    "NoiseGrad",
    "SmoothGrad",
    "VarGrad",
    "WeightNoiseOptions",
    "option_names",
    "specs",
]

_record = attrs.frozen(kw_only=True, slots=False, eq=False)


def _count(argument: str) -> Any:
    return lambda value: check_positive_int(value, argument)


def option_names(cls: type) -> tuple[str, ...]:
    """The options a factory class takes: its attrs fields that ``__init__`` accepts."""
    return tuple(f.name for f in attrs.fields(cls) if f.init)


@_record
class MonteCarloEnhancer:
    """What every Monte-Carlo enhancer shares: the sample count, aggregation and engine options.

    Args:
        n_samples: N, the number of samples (per weight sample, for FusionGrad).
        aggregate: ``"mean"``, ``"mean_square"`` (SmoothGrad²) or ``"variance"`` (VarGrad).
        abs_per_sample: aggregate the absolute value of each draw's map, ``mean |E_s|``
            (default False: ``mean E_s``). The NoiseGrad reference code takes ``|·|`` per draw.
        create_graph: keep the autograd graph from the maps to the inputs and the parameters
            (the method must be differentiable); the graph of every sample is kept, so memory
            grows with the sample count (see docs/enhancers.md).
        seed: makes the draws repeatable (the same seed gives the same maps).
        generator: a ``torch.Generator`` on the inputs' device instead of ``seed``.
        strategy: ``"auto"`` (``"vmap"`` on accelerators for gradient-only methods, else
            ``"loop"``), ``"vmap"`` (stacked weight samples under ``torch.func.vmap``;
            gradient-only methods) or ``"loop"`` (one functional view per weight sample; any
            method).
        max_batch: rows per explainer call (default 128 on CPU, 4096 on CUDA).
        return_samples: also return the per-sample maps: the call returns a
            :class:`~wrapgrad.engine.MonteCarloResult` ``(attributions, samples)``, ``samples``
            of shape ``(S, B, ...)``.
        progress: show a progress bar (default: ``$WRAPGRAD_PROGRESS``, off unless set).
    """

    name: ClassVar[str] = "monte_carlo"

    n_samples: int = attrs.field(default=10, converter=_count("n_samples"))
    aggregate: str = "mean"
    abs_per_sample: bool = False
    create_graph: bool = False
    seed: int | None = None
    generator: torch.Generator | None = None
    strategy: str = "auto"
    max_batch: int | None = None
    return_samples: bool = False
    progress: bool | None = None
    weight_noise: Any = attrs.field(init=False, default=None, repr=False)
    """The weight perturber the enhancer draws from (None: no weight noise)."""
    input_noise: Any = attrs.field(init=False, default=None, repr=False)
    """The input perturber the enhancer draws from (None: no input noise)."""
    config: MonteCarloConfig = attrs.field(init=False, default=None, repr=False)
    """The engine configuration, built and validated once."""

    def __attrs_post_init__(self) -> None:
        weight, inputs = self._noise_sources()
        n_models, n_inputs = self._counts()
        if self.aggregate == "variance" and n_models * n_inputs < 2:
            raise WrapgradValueError(
                f"n_samples: the unbiased variance needs at least 2 samples, got "
                f"{n_models * n_inputs}"
            )
        config = MonteCarloConfig(
            weight_sampler=weight,
            input_sampler=inputs,
            n_models=n_models,
            n_inputs=n_inputs,
            noise_layer=getattr(self, "noise_layer", None),
            **self._engine_options(),
        )
        object.__setattr__(self, "weight_noise", weight)
        object.__setattr__(self, "input_noise", inputs)
        object.__setattr__(self, "config", config)

    def _engine_options(self) -> dict[str, Any]:
        """The shared options the engine takes as they are: the fields of this class that are
        :class:`~wrapgrad.engine.MonteCarloConfig` fields too (``aggregate``, ``seed``,
        ``strategy``, ``max_batch``, ...), with this enhancer's values."""
        engine = {f.name for f in attrs.fields(MonteCarloConfig)}
        shared = (f.name for f in attrs.fields(MonteCarloEnhancer) if f.name in engine)
        return {name: getattr(self, name) for name in shared}

    def _noise_sources(self) -> tuple[Any, Any]:
        """``(weight perturber or None, input perturber or None)``."""
        return None, None

    def _counts(self) -> tuple[int, int]:
        """``(n_models, n_inputs)`` for the engine."""
        return 1, self.n_samples

    def __call__(
        self,
        explainer: Explainer,
        model: nn.Module,
        inputs: TensorOrTuple,
        target: Any = None,
        **attribute_kwargs: Any,
    ) -> Any:
        return monte_carlo(
            explainer, model, inputs, target, self.config, attribute_kwargs=attribute_kwargs
        )


def _noise_source(
    enhancer: Any, value: Any, target: str, argument: str, options: dict[str, Any]
) -> Any:
    """The perturber for ``value`` (None: the built-in one, a registered name, or an object).

    ``options`` are the enhancer's noise options for this target (``noise_level``, ``sigma``,
    ...): a built-in or named perturber is built with them; with a perturber object, one that
    differs from its default is an error (the object carries its own noise).
    """
    defaults = {f.name: f.default for f in attrs.fields(type(enhancer))}
    if value is None:
        builtin = InputGaussian if target == "input" else WeightMultiplicative
        return builtin(**options)
    if isinstance(value, str):
        spec = get_registry().get("perturber", value, argument=argument)
        if spec.target != target:
            raise WrapgradValueError(
                f"{argument}: {spec.name!r} is a {spec.target} perturber; expected one with "
                f"target {target!r}"
            )
        names, open_ = spec.option_names()
        given = {}
        for key, v in options.items():
            if open_ or key in names:
                given[key] = v
            elif v != defaults.get(key):
                raise WrapgradValueError(
                    f"{key}: the perturber {spec.name!r} takes no option {key!r}; drop it"
                )
        value = spec.factory(**given)
    else:
        for key, v in options.items():
            if v != defaults.get(key):
                raise WrapgradValueError(
                    f"{key}: {argument} is a perturber object with its own noise; drop {key} "
                    f"(or pass the perturber by its registered name)"
                )
    return check_perturber(value, target, argument)


@_record
class InputNoiseOptions:
    """The input-noise options (SmoothGrad, VarGrad, FusionGrad).

    Args:
        noise_level: α_SG, σ = α_SG · (max x − min x) per sample (Eq. 4).
        input_sigma: an absolute input standard deviation (Captum NoiseTunnel's ``stdevs``);
            overrides ``noise_level``.
        noise_layer: the dotted name of a module whose output takes the input noise instead of
            the inputs (σ relative to that output's range per sample), e.g. the embedding of a
            text model: SmoothGrad on embeddings for integer token ids.
    """

    noise_level: float = 0.2
    input_sigma: float | None = None
    noise_layer: str | None = None

    def _input_options(self) -> dict[str, Any]:
        return {"noise_level": self.noise_level, "input_sigma": self.input_sigma}


@_record
class WeightNoiseOptions:
    """The weight-noise options (NoiseGrad, FusionGrad).

    Args:
        sigma: σ_NG of η ~ N(1, σ²) (the paper picks σ for a ~5 % relative accuracy drop;
            ``wrapgrad.calibrate`` finds it for your model).
        include: parameter name patterns to perturb (globs such as ``"features.*"`` or
            ``"re:<regex>"``); default: every floating-point parameter.
        exclude: parameter name patterns to leave unperturbed.
        module_types: perturb only parameters of modules of these types.
    """

    sigma: float = 0.2
    include: str | Iterable[str] | None = None
    exclude: str | Iterable[str] | None = None
    module_types: type | Iterable[type] | None = None

    def _weight_options(self) -> dict[str, Any]:
        return {
            "sigma": self.sigma,
            "include": self.include,
            "exclude": self.exclude,
            "module_types": self.module_types,
        }


@_record
class SmoothGrad(MonteCarloEnhancer, InputNoiseOptions):
    """SmoothGrad (Smilkov et al. 2017; Bykov et al. 2022 background): average explanations of
    ``N`` noisy inputs ``x + ξ_j``, ξ_j ~ N(0, σ²I), σ = ``noise_level``·(max x − min x) per sample
    (Eq. 4) or an absolute ``input_sigma``.

    Options: ``n_samples`` N (default 10, enough for all methods in the paper's experiments);
    ``noise_level`` α_SG (default 0.2, the paper's choice within the recommended [0.1, 0.2]),
    ``input_sigma``, ``noise_layer`` (see :class:`InputNoiseOptions`); ``perturber``: the input
    noise as an :class:`~wrapgrad.protocols.InputPerturber` object or a registered perturber
    name (default: ``input_gaussian``); the rest: see :class:`MonteCarloEnhancer`.

    Example::

        explain = wrapgrad.wrap(model, "saliency", enhancer="smoothgrad", noise_level=0.15, seed=0)
    """

    name: ClassVar[str] = "smoothgrad"
    perturber: Any = None

    def _noise_sources(self) -> tuple[Any, Any]:
        return None, _noise_source(
            self, self.perturber, "input", "perturber", self._input_options()
        )


@_record
class VarGrad(SmoothGrad):
    """VarGrad (Adebayo et al. 2018): the unbiased variance of explanations of ``N`` noisy inputs,

    .. math:: \\frac1{N-1} \\sum_j \\bigl(E(x+\\xi_j) - \\bar E\\bigr)^2,

    with the noise and options of :class:`SmoothGrad` (``aggregate`` is fixed). ``n_samples``
    must be at least 2.
    """

    name: ClassVar[str] = "vargrad"
    aggregate: str = attrs.field(default="variance", init=False)


@_record
class NoiseGrad(MonteCarloEnhancer, WeightNoiseOptions):
    """NoiseGrad (Bykov et al. 2022, Eq. 1): average explanations of ``N`` models with
    multiplicative weight noise ``Ŵ ⊙ η_i``, η_i ~ N(1, σ²I), evaluated functionally (the user's
    model is never copied or edited).

    Options: ``n_samples`` N weight samples (default 10); ``sigma`` σ_NG (default 0.2; the paper
    finds [0.2, 0.4] visually best), ``include``, ``exclude``, ``module_types`` (see
    :class:`WeightNoiseOptions`); ``perturber``: the weight noise as a
    :class:`~wrapgrad.protocols.WeightPerturber` object or a registered perturber name (default:
    ``weight_multiplicative``); the rest: see :class:`MonteCarloEnhancer`.

    Example::

        explain = wrapgrad.wrap(model, "integrated_gradients", enhancer="noisegrad",
                                n_samples=20, sigma=0.2, seed=0)
    """

    name: ClassVar[str] = "noisegrad"
    perturber: Any = None

    def _noise_sources(self) -> tuple[Any, Any]:
        return _noise_source(
            self, self.perturber, "weight", "perturber", self._weight_options()
        ), None

    def _counts(self) -> tuple[int, int]:
        return self.n_samples, 1


@_record
class FusionGrad(MonteCarloEnhancer, InputNoiseOptions, WeightNoiseOptions):
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

    Options: ``n_samples`` N (default 10); ``n_models`` M (default 10); the input-noise options
    of :class:`InputNoiseOptions` and the weight-noise options of :class:`WeightNoiseOptions`;
    ``input_perturber`` / ``weight_perturber``: the two noises as perturber objects or
    registered names; the rest: see :class:`MonteCarloEnhancer`.
    """

    name: ClassVar[str] = "fusiongrad"
    n_models: int = attrs.field(default=10, converter=_count("n_models"))
    sigma: float = 0.1
    noise_level: float = 0.1
    input_perturber: Any = None
    weight_perturber: Any = None

    def _noise_sources(self) -> tuple[Any, Any]:
        return (
            _noise_source(
                self, self.weight_perturber, "weight", "weight_perturber", self._weight_options()
            ),
            _noise_source(
                self, self.input_perturber, "input", "input_perturber", self._input_options()
            ),
        )

    def _counts(self) -> tuple[int, int]:
        return self.n_models, self.n_samples


#: Option -> largest value in ``--smoke`` runs (CI).
_SMOKE = {"n_samples": 2, "n_models": 2}


def _spec(factory: type, summary: str, **extra: Any) -> EnhancerSpec:
    names = option_names(factory)
    return EnhancerSpec(
        name=factory.name,
        factory=factory,
        summary=summary,
        options=names,
        smoke={k: v for k, v in _SMOKE.items() if k in names},
        **extra,
    )


def specs() -> Iterator[EnhancerSpec]:
    """The enhancer specs this plugin contributes (options declared: exactly the factory's;
    ``levels``: the noise levels ``wrap(..., level="auto", calibration=data)`` calibrates)."""
    yield _spec(
        SmoothGrad,
        "SmoothGrad: mean over noisy inputs (aggregate='mean_square' for SmoothGrad^2).",
        levels={"noise_level": "input"},
    )
    yield _spec(
        NoiseGrad,
        "NoiseGrad: mean over multiplicative weight-noise samples (Bykov et al. 2022).",
        levels={"sigma": "weight"},
    )
    yield _spec(
        FusionGrad,
        "FusionGrad: M weight samples x N noisy inputs each (Bykov et al. 2022, Eq. 2).",
        levels={"sigma": "weight", "noise_level": "input"},
        calibrator="halve",
    )
    yield _spec(
        VarGrad,
        "VarGrad: unbiased variance of explanations over noisy inputs.",
        levels={"noise_level": "input"},
    )
