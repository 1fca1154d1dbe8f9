"""The validated Monte-Carlo configuration: what one estimate draws and how it runs.

:class:`MonteCarloConfig` is built once (an enhancer builds it when it is constructed) and checks
every option there, so a run never re-validates: ``aggregate`` and ``strategy`` are checked by
:func:`check_aggregate` / :func:`check_strategy` and nowhere else, perturbers by
:func:`check_perturber` against the protocols of :mod:`wrapgrad.protocols` (exactly the members
the engine uses: ``target``, ``is_zero``, ``sample`` and, for weight noise, ``parameter_names``).

Example::

    config = MonteCarloConfig(input_sampler=InputGaussian(0.1), n_inputs=10, seed=0)
    maps = monte_carlo(explainer, model, x, target, config)
    config.evolve(aggregate="variance")      # a variant, re-validated
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import torch

from wrapgrad.checks import (
    check_bool,
    check_choice,
    check_generator,
    check_positive_int,
    check_seed,
)
from wrapgrad.errors import UnknownNameError, WrapgradTypeError, WrapgradValueError

__all__ = [
    "AGGREGATES",
    "STRATEGIES",
    "MonteCarloConfig",
    "check_aggregate",
    "check_perturber",
    "check_strategy",
    "default_max_batch",
]

#: ``"mean"`` (SmoothGrad, NoiseGrad, FusionGrad), ``"mean_square"`` (SmoothGrad²),
#: ``"variance"`` (VarGrad, unbiased).
AGGREGATES = ("mean", "mean_square", "variance")
#: ``"auto"`` (vmap on accelerators for gradient-only methods, else a loop), ``"vmap"``, ``"loop"``.
STRATEGIES = ("auto", "vmap", "loop")

#: Default rows per explainer call on CPU (chunks of about a hundred rows keep the working set
#: in cache; one giant batch was measurably slower, see docs/benchmarks.md).
_CPU_MAX_BATCH = 128
_CUDA_MAX_BATCH = 4096

#: What each perturber target must offer (the members the engine uses, see wrapgrad.protocols).
_MEMBERS = {
    "input": ("target", "is_zero", "sample"),
    "weight": ("target", "is_zero", "sample", "parameter_names"),
}


def default_max_batch(device: torch.device) -> int:
    """Rows per explainer call when ``max_batch`` is not given (128 on CPU, 4096 on CUDA)."""
    return _CUDA_MAX_BATCH if torch.device(device).type == "cuda" else _CPU_MAX_BATCH


def check_aggregate(value: Any) -> str:
    """``value`` if it is one of :data:`AGGREGATES` (the one place ``aggregate`` is checked)."""
    return check_choice(value, "aggregate", AGGREGATES)


def check_strategy(value: Any) -> str:
    """``value`` if it is one of :data:`STRATEGIES` (the one place ``strategy`` is checked)."""
    return check_choice(value, "strategy", STRATEGIES)


def check_perturber(value: Any, target: str, argument: str) -> Any:
    """``value`` if it follows the ``target`` perturber protocol (``"input"``:
    :class:`~wrapgrad.protocols.InputPerturber`, ``"weight"``:
    :class:`~wrapgrad.protocols.WeightPerturber`), or None.

    Raises:
        WrapgradTypeError: a member the engine calls is missing (named in the message).
        WrapgradValueError: the perturber's ``target`` is another one (a weight perturber given
            for input noise, ...).
    """
    if value is None:
        return None
    kind = f"{'an' if target == 'input' else 'a'} {target} perturber"
    if hasattr(value, "target") and value.target != target:
        raise WrapgradValueError(
            f"{argument}: expected {kind} (target {target!r}), got {type(value).__name__} "
            f"with target {value.target!r}"
        )
    missing = [m for m in _MEMBERS[target] if not hasattr(value, m)]
    if missing:
        raise WrapgradTypeError(
            f"{argument}: expected {kind} (members {', '.join(_MEMBERS[target])}), got "
            f"{type(value).__name__} without {', '.join(missing)}"
        )
    for method in ("sample", "parameter_names"):
        if method in _MEMBERS[target] and not callable(getattr(value, method)):
            raise WrapgradTypeError(f"{argument}: {type(value).__name__}.{method} is not callable")
    return value


def _checked(check: Callable[..., Any], argument: str) -> Callable[[Any], Any]:
    return lambda value: check(value, argument)


def _optional(check: Callable[..., Any], argument: str) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value, argument)


def _perturber(target: str, argument: str) -> Callable[[Any], Any]:
    return lambda value: check_perturber(value, target, argument)


def _noise_layer(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise WrapgradTypeError(
            f"noise_layer: expected the dotted name of a module (e.g. 'embeddings.word'), got "
            f"{value!r}"
        )
    return value


@attrs.frozen(kw_only=True)
class MonteCarloConfig:
    """Everything one Monte-Carlo estimate needs besides the explainer, model and inputs.

    An estimate aggregates ``S = n_models · n_inputs`` samples ``E(x + ξ_{k,j}, f(·, Ŵ ⊙ η_k))``
    (Bykov et al. 2022, Eq. 1 and 2); see :mod:`wrapgrad.engine`.
    """

    weight_sampler: Any = attrs.field(
        default=None, converter=_perturber("weight", "weight_sampler")
    )
    """Weight noise (a :class:`~wrapgrad.protocols.WeightPerturber`), or None."""
    input_sampler: Any = attrs.field(default=None, converter=_perturber("input", "input_sampler"))
    """Input noise (an :class:`~wrapgrad.protocols.InputPerturber`), or None."""
    n_models: int = attrs.field(default=1, converter=_checked(check_positive_int, "n_models"))
    """K, the weight samples."""
    n_inputs: int = attrs.field(default=1, converter=_checked(check_positive_int, "n_inputs"))
    """N, the input samples per weight sample."""
    aggregate: str = attrs.field(default="mean", converter=check_aggregate)
    """How the samples are reduced: one of :data:`AGGREGATES`."""
    strategy: str = attrs.field(default="auto", converter=check_strategy)
    """How weight samples run: one of :data:`STRATEGIES` (see :func:`~wrapgrad.engine.pick_strategy`)."""
    max_batch: int | None = attrs.field(
        default=None, converter=_optional(check_positive_int, "max_batch")
    )
    """Rows per explainer call; None: :func:`default_max_batch` of the inputs' device."""
    seed: int | None = attrs.field(default=None, converter=check_seed)
    """Seeds every draw (None: drawn from torch's global RNG)."""
    generator: torch.Generator | None = attrs.field(default=None)
    """Drives every draw instead of ``seed`` (a ``torch.Generator`` on the inputs' device)."""
    return_samples: bool = attrs.field(
        default=False, converter=_checked(check_bool, "return_samples")
    )
    """Keep the per-sample maps: the call returns a :class:`~wrapgrad.engine.MonteCarloResult`."""
    abs_per_sample: bool = attrs.field(
        default=False, converter=_checked(check_bool, "abs_per_sample")
    )
    """Aggregate ``|E_s|`` instead of ``E_s`` (the absolute value of each draw, before the mean)."""
    create_graph: bool = attrs.field(default=False, converter=_checked(check_bool, "create_graph"))
    """Keep the autograd graph from the aggregate to the inputs and the parameters."""
    noise_layer: str | None = attrs.field(default=None, converter=_noise_layer)
    """Put the input noise on this module's output instead of on the inputs."""
    progress: bool | None = attrs.field(default=None, converter=_optional(check_bool, "progress"))
    """Show a progress bar: True/False; None (default): ``$WRAPGRAD_PROGRESS`` decides (off
    unless set, see :mod:`wrapgrad.progress`)."""

    def __attrs_post_init__(self) -> None:
        check_generator(self.generator, self.seed)
        if self.noise_layer is not None:
            if self.input_sampler is None:
                raise WrapgradValueError(
                    "noise_layer: puts the input noise on a layer's output, but there is no "
                    "input noise (input_sampler is None)"
                )
            if self.strategy == "vmap":
                raise WrapgradValueError(
                    "noise_layer: layer noise runs one weight sample per call; use "
                    "strategy='loop' or 'auto', not 'vmap'"
                )

    @property
    def samples(self) -> int:
        """``S = n_models · n_inputs``."""
        return self.n_models * self.n_inputs

    def evolve(self, **changes: Any) -> MonteCarloConfig:
        """A copy with ``changes`` (re-validated); an unknown name gets the closest ones."""
        names = {f.name for f in attrs.fields(type(self))}
        for key in changes:
            if key not in names:
                raise UnknownNameError("options", key, names, what="engine option")
        return attrs.evolve(self, **changes)

    @classmethod
    def build(cls, config: MonteCarloConfig | None = None, **options: Any) -> MonteCarloConfig:
        """``config`` (default: the defaults) with ``options`` applied, validated."""
        if config is not None and not isinstance(config, cls):
            raise WrapgradTypeError(
                f"config: expected a MonteCarloConfig, got {type(config).__name__}"
            )
        return (config or cls()).evolve(**options) if options else (config or cls())
