"""The Monte-Carlo engine behind SmoothGrad, NoiseGrad, FusionGrad and VarGrad.

An enhanced explanation is an aggregate over ``S = K · N`` Monte-Carlo samples: ``K`` weight
samples ``W_k = Ŵ ⊙ η_k`` and, for each, ``N`` input samples ``x + ξ_{k,j}`` (Bykov et al. 2022,
Eq. 1 for NoiseGrad, Eq. 2 for FusionGrad; SmoothGrad is ``K = 1`` without weight noise):

.. math::
    E(x) = \\operatorname{agg}_{k,j}\\; E\\bigl(x + \\xi_{k,j},\\, f(\\cdot, W_k)\\bigr),
    \\qquad \\operatorname{agg} \\in \\{\\text{mean}, \\text{mean of squares},
    \\text{unbiased variance}\\}.

The package in parts (each module holds one of them):

* :mod:`~wrapgrad.engine.config`: :class:`MonteCarloConfig`, every option validated once;
* :mod:`~wrapgrad.engine.plan`: the chunk plan (at most ``max_batch`` rows per explainer call,
  on CUDA also a byte budget for stacked weights and a halving retry on out-of-memory) and
  :func:`pick_strategy`;
* :mod:`~wrapgrad.engine.rng`: the estimate's generator, the per-sample seed table, and for
  methods that draw random numbers themselves (``traits.stochastic``: GradientShap, Lime, ...)
  or models in training mode a second table of per-sample global-RNG seeds: such a run gives
  every sample a call of its own with the global RNGs seeded from its entry (restored
  afterwards), so their draws do not depend on chunk sizes or strategy either;
* :mod:`~wrapgrad.engine.sampler`: weight and input draws from per-sample seeds, so results do
  not depend on chunk sizes or strategy;
* :mod:`~wrapgrad.engine.views`: the model as the explainer sees it (the module, a
  :class:`~wrapgrad.functional.FunctionalView` with one weight sample, or a :class:`StackedView`
  of several under ``vmap``), per-call buffer copies in training mode;
* :mod:`~wrapgrad.engine.batching`: sample-major batches (rows ``[i·B, (i+1)·B)`` are sample
  ``i``; targets, baselines, masks and extra forward arguments tiled alike);
* :mod:`~wrapgrad.engine.layer_noise`: input noise on a layer's output (``noise_layer``);
* :mod:`~wrapgrad.engine.reduce`: streaming Welford moments, so memory does not grow with ``S``;
* :mod:`~wrapgrad.engine.run`: :class:`MonteCarloRun`, one call's set-up and its chunks.

Modes: the model runs in the mode the user left it. In training mode its buffers are replaced by
per-call copies, and every sample runs in a call of its own (its own global-RNG seed for dropout;
with BatchNorm in training mode each noisy copy of the batch is normalised on its own), as the
model would see the batch.

The engine reads an explainer only through :func:`wrapgrad.records.traits_of` and a perturber
only through the members of :class:`~wrapgrad.protocols.InputPerturber` /
:class:`~wrapgrad.protocols.WeightPerturber`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .config import (
    AGGREGATES,
    STRATEGIES,
    MonteCarloConfig,
    check_aggregate,
    check_perturber,
    check_strategy,
    default_max_batch,
)
from .plan import pick_strategy
from .reduce import MonteCarloResult, RunningMoments
from .rng import derive_seeds, make_generator
from .run import MonteCarloRun
from .views import StackedView

__all__ = [
    "AGGREGATES",
    "STRATEGIES",
    "MonteCarloConfig",
    "MonteCarloResult",
    "MonteCarloRun",
    "RunningMoments",
    "StackedView",
    "check_aggregate",
    "check_perturber",
    "check_strategy",
    "default_max_batch",
    "derive_seeds",
    "make_generator",
    "monte_carlo",
    "noisy_forward",
    "pick_strategy",
]


def monte_carlo(
    explainer: Any,
    model: nn.Module,
    inputs: Tensor | tuple[Tensor, ...],
    target: Any = None,
    config: MonteCarloConfig | None = None,
    *,
    attribute_kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> Any:
    """Aggregate ``explainer`` over ``n_models × n_inputs`` Monte-Carlo samples.

    Args:
        explainer: an Explainer ``(model, inputs, target, **kw) -> maps``.
        model: the user's model (never mutated).
        inputs: a batch ``(B, ...)`` or a tuple of batches.
        target: Captum's target forms; tiled with the batch.
        config: a :class:`MonteCarloConfig` (built once, e.g. by an enhancer).
        attribute_kwargs: keyword arguments for the explainer (``baselines``, ``n_steps``,
            ``additional_forward_args``, ...); per-sample tensors are tiled.
        **options: fields of :class:`MonteCarloConfig` applied to ``config`` (or to the
            defaults): ``weight_sampler``, ``input_sampler``, ``n_models``, ``n_inputs``,
            ``aggregate``, ``seed``/``generator``, ``strategy``, ``max_batch``,
            ``return_samples``, ``abs_per_sample``, ``create_graph``, ``noise_layer``,
            ``progress``.

    Returns:
        The aggregate, shaped like the explainer's output; with ``return_samples`` a
        :class:`MonteCarloResult` ``(attributions, samples)``, ``samples`` of shape
        ``(S, B, ...)`` (sample ``k·N + j``).

    Example::

        maps = monte_carlo(explainer, model, x, y, input_sampler=InputGaussian(0.1),
                           n_inputs=10, seed=0)
    """
    config = MonteCarloConfig.build(config, **options)
    return MonteCarloRun(config, model, inputs, explainer, attribute_kwargs).explain(target)


@torch.no_grad()
def noisy_forward(
    model: nn.Module,
    inputs: Tensor | tuple[Tensor, ...],
    config: MonteCarloConfig | None = None,
    *,
    additional_forward_args: Any = None,
    **options: Any,
) -> Tensor:
    """Model outputs under weight and/or input noise, batched: shape ``(K, N, B, *out)``.

    Entry ``[k, j]`` is ``f(x + ξ_{k,j}; Ŵ ⊙ η_k)``; on accelerators the ``K`` weight samples
    of a chunk run as one ``vmap``-ed call, on CPU as one functional call each. Draws follow the
    same per-sample seed table as :func:`monte_carlo`. Runs without gradients; in training mode
    buffers are copied, never updated, and each sample runs in a call of its own with the global
    RNGs seeded from its own seed (dropout masks do not depend on ``max_batch`` or strategy).

    Args:
        model: the model (never mutated).
        inputs: a batch ``(B, ...)`` or a tuple of batches.
        config: a :class:`MonteCarloConfig`; or its fields as ``**options`` (``weight_sampler``,
            ``input_sampler``, ``n_models``, ``n_inputs``, ``seed``/``generator``,
            ``max_batch``, ``strategy``, ``noise_layer``).
        additional_forward_args: extra positional arguments for the model (tiled if batch-first).

    Example::

        logits = noisy_forward(model, x, weight_sampler=WeightMultiplicative(0.2),
                               n_models=16, seed=0)        # (16, 1, B, C)
        acc = (logits.argmax(-1) == y).float().mean()
    """
    config = MonteCarloConfig.build(config, **options)
    return MonteCarloRun(config, model, inputs).forward(additional_forward_args)
