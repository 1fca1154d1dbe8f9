"""The Monte-Carlo engine behind SmoothGrad, NoiseGrad, FusionGrad and VarGrad.

An enhanced explanation is an aggregate over ``S = K · N`` Monte-Carlo samples: ``K`` weight
samples ``W_k = Ŵ ⊙ η_k`` and, for each, ``N`` input samples ``x + ξ_{k,j}`` (Bykov et al. 2022,
Eq. 1 for NoiseGrad, Eq. 2 for FusionGrad; SmoothGrad is ``K = 1`` without weight noise):

.. math::
    E(x) = \\operatorname{agg}_{k,j}\\; E\\bigl(x + \\xi_{k,j},\\, f(\\cdot, W_k)\\bigr),
    \\qquad \\operatorname{agg} \\in \\{\\text{mean}, \\text{mean of squares},
    \\text{unbiased variance}\\}.

How it runs:

* **Batching.** The noisy copies of a batch of ``B`` inputs travel through the explainer as one
  batch of ``c · B`` rows (sample-major: rows ``[i·B, (i+1)·B)`` are sample ``i``); targets,
  baselines, feature masks and additional forward arguments are tiled to match.
* **Weights.** Never copied into the model, never edited: weight samples are tensors evaluated
  with :func:`torch.func.functional_call`. With ``strategy="vmap"`` (gradient-only methods:
  Saliency, InputXGradient, IntegratedGradients, GradientShap, ...) the ``k`` weight samples of a
  chunk are stacked and the forward pass is ``vmap``-ed inside :class:`StackedView`, so Captum
  sees one ordinary model on a ``k · n · B`` batch. With ``strategy="loop"`` (hook-based methods:
  DeepLift, GuidedBackprop, LRP, layer and neuron methods) each weight sample runs through a
  :class:`~wrapgrad.functional.FunctionalView`. ``strategy="auto"`` uses ``vmap`` on
  accelerators and the loop on CPU, where it measured as fast or faster
  (``docs/benchmarks.md``).
* **Chunks.** At most ``max_batch`` rows per explainer call (on CUDA also a byte budget for the
  stacked weights, and a halving retry on out-of-memory); results are reduced as they stream
  (:class:`~wrapgrad.sampling.RunningMoments`), so memory does not grow with ``S``.
* **Randomness.** One generator (on the inputs' device) draws a table of seeds, one per weight
  sample and one per input sample; every draw of a sample comes from its own seed, so results do
  not depend on chunk sizes or strategy, and the same seed gives the same maps. Methods that
  draw random numbers themselves (GradientShap, Lime, KernelShap, ...) and dropout in training
  mode use the global RNGs: those are seeded from the same generator for the call and restored
  afterwards, so the same seed gives the same maps for them too (their own draws do depend on
  the chunking).
* **Modes.** The model runs in the mode the user left it. In training mode its buffers (BatchNorm
  running statistics) are replaced by per-call copies, so no buffer update leaks into the model;
  with BatchNorm in training mode each noisy copy of the batch is normalised on its own (one
  input sample per call or per vmap slice), as the model would see the batch.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from wrapgrad.checks import as_input_tuple, check_positive_int
from wrapgrad.errors import WrapgradTypeError, WrapgradValueError
from wrapgrad.functional import FunctionalView
from wrapgrad.records import traits_of
from wrapgrad.sampling import (
    RunningMoments,
    derive_seeds,
    make_generator,
)

__all__ = [
    "AGGREGATES",
    "STRATEGIES",
    "StackedView",
    "default_max_batch",
    "monte_carlo",
    "noisy_forward",
    "pick_strategy",
]

AGGREGATES = ("mean", "mean_square", "variance")
STRATEGIES = ("auto", "vmap", "loop")

#: attribute() keywords holding per-sample tensors that must be tiled with the batch.
_PER_SAMPLE_KWARGS = ("baselines", "additional_forward_args", "feature_mask")

#: Default rows per explainer call on CPU (chunks of about a hundred rows keep the working set
#: in cache; one giant batch was measurably slower, see docs/benchmarks.md).
_CPU_MAX_BATCH = 128
_CUDA_MAX_BATCH = 4096


# -- helpers ------------------------------------------------------------------------------------
def default_max_batch(device: torch.device) -> int:
    """Rows per explainer call when ``max_batch`` is not given."""
    return _CUDA_MAX_BATCH if device.type == "cuda" else _CPU_MAX_BATCH


def _tile(value: Any, c: int, batch: int) -> Any:
    """Repeat per-sample values ``c`` times along the batch (sample-major blocks)."""
    if c == 1:
        return value
    if isinstance(value, Tensor):
        if value.dim() >= 1 and value.shape[0] == batch:
            return value.repeat(c, *([1] * (value.dim() - 1)))
        return value
    if isinstance(value, tuple):
        return tuple(_tile(v, c, batch) for v in value)
    if isinstance(value, list):
        if len(value) == batch and not any(isinstance(v, Tensor) for v in value):
            return value * c
        return [_tile(v, c, batch) for v in value]
    return value


def _tile_target(target: Any, c: int, batch: int) -> Any:
    if c == 1 or target is None or isinstance(target, (int, tuple)):
        return target
    if isinstance(target, Tensor):
        if target.dim() >= 1 and target.shape[0] == batch and target.numel() > 1:
            return target.repeat(c, *([1] * (target.dim() - 1)))
        return target
    if isinstance(target, list):
        return target * c if len(target) == batch else target
    return target


def _explainer_name(explainer: Any) -> str:
    return traits_of(explainer).name


def _vmap_layout(explainer: Any) -> str | None:
    """How the explainer lays out expanded batches, or None if it cannot run under vmap."""
    traits = traits_of(explainer)
    if traits.uses_hooks or traits.family != "attribution":
        return None
    return traits.vmap_layout


def pick_strategy(
    explainer: Any,
    device: torch.device,
    strategy: str = "auto",
    attribute_kwargs: dict[str, Any] | None = None,
) -> str:
    """``"vmap"`` or ``"loop"`` for weight-noise samples of ``explainer`` on ``device``.

    ``"auto"`` picks ``"vmap"`` on accelerators for gradient-only methods (one large batched
    call keeps the device busy) and ``"loop"`` on CPU, where batched (grouped) convolutions and
    vmapped BatchNorm/pooling were slower than one plain call per weight sample
    (``benchmarks/bench_enhancers.py``, ``docs/benchmarks.md``); methods that use module hooks,
    draw per-example perturbations or split batches themselves (``internal_batch_size``) always
    loop.
    """
    if strategy not in STRATEGIES:
        raise WrapgradValueError(f"strategy: expected 'auto', 'vmap' or 'loop', got {strategy!r}")
    layout = _vmap_layout(explainer)
    splits = bool((attribute_kwargs or {}).get("internal_batch_size"))
    if strategy == "vmap":
        if layout is None:
            raise WrapgradValueError(
                f"strategy: 'vmap' cannot run {_explainer_name(explainer)}: it relies on module "
                f"hooks or per-example evaluation; use strategy='loop' (or 'auto')"
            )
        if splits:
            raise WrapgradValueError(
                "strategy: 'vmap' cannot run with internal_batch_size (the method splits the "
                "batch itself); use strategy='loop' or drop internal_batch_size"
            )
        return "vmap"
    if strategy == "loop" or layout is None or splits or device.type == "cpu":
        return "loop"
    return "vmap"


def _in_training(model: nn.Module) -> bool:
    return any(m.training for m in model.modules())


def _batch_statistics(model: nn.Module) -> bool:
    """True if a BatchNorm layer of ``model`` is in training mode (normalises by batch stats)."""
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules()
    )


@contextlib.contextmanager
def _seeded_global_rng(gen: torch.Generator, device: torch.device, enabled: bool) -> Iterator[None]:
    """Run the block with the global RNGs (torch's CPU and the inputs' CUDA device, NumPy's,
    Python's) seeded from ``gen``, and restore the caller's RNG states afterwards.

    Captum's stochastic methods (GradientShap, Lime, KernelShap, ...) and dropout in training
    mode draw from the global RNG; seeding it from the engine's generator makes the same
    ``seed`` give the same maps for them too, without touching the caller's random state.
    """
    if not enabled:
        yield
        return
    seed = int(derive_seeds(gen, (1,))[0])
    cuda = device.type == "cuda"
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=[device] if cuda else []):
            torch.default_generator.manual_seed(seed)
            if cuda:
                index = device.index if device.index is not None else torch.cuda.current_device()
                torch.cuda.default_generators[index].manual_seed(seed)
            np.random.seed(seed % 2**32)  # GradientShap draws baselines and steps with NumPy
            random.seed(seed)
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def _buffer_copies(model: nn.Module, k: int | None) -> dict[str, Tensor]:
    """Copies of the model's buffers (stacked ``k`` times if ``k``), for training-mode runs."""
    out = {}
    for name, b in model.named_buffers():
        b = b.detach()
        out[name] = b.clone() if k is None else b.unsqueeze(0).expand(k, *b.shape).clone()
    return out


class StackedView(nn.Module):
    """``k`` weight samples of one model as one module on a ``k``-fold batch, via ``vmap``.

    ``view(x)`` with ``x`` of ``k · unit · s`` rows evaluates sample ``i`` of the stack on its
    share of the rows and returns the outputs in the rows' order. ``unit`` is the rows per
    weight sample in the batch the engine built; explainers may expand it ``s``-fold (Integrated
    Gradients' steps, ``layout="block"``: ``torch.cat([batch] * s)``; NoiseTunnel inside
    GradientShap, ``layout="interleave"``: ``repeat_interleave(s)``).

    Args:
        model: the user's model (registered as a sub-module, never changed).
        stacks: name -> ``(k, *shape)`` parameter (and, in training mode, buffer) samples.
        k: the number of weight samples.
        unit: rows per weight sample.
        layout: ``"block"`` or ``"interleave"``.
    """

    def __init__(
        self, model: nn.Module, stacks: dict[str, Tensor], k: int, unit: int, layout: str
    ) -> None:
        super().__init__()
        self.model = model
        self.stacks = stacks
        self.k = k
        self.unit = unit
        self.layout = layout
        self.training = model.training

    def _split(self, a: Tensor, s: int) -> Tensor:
        rest = a.shape[1:]
        if self.layout == "interleave" or s == 1:
            return a.reshape(self.k, self.unit * s, *rest)
        return (
            a.reshape(s, self.k, self.unit, *rest)
            .transpose(0, 1)
            .reshape(self.k, s * self.unit, *rest)
        )

    def _merge(self, out: Tensor, s: int) -> Tensor:
        rest = out.shape[2:]
        total = self.k * self.unit * s
        if self.layout == "interleave" or s == 1:
            return out.reshape(total, *rest)
        return out.reshape(self.k, s, self.unit, *rest).transpose(0, 1).reshape(total, *rest)

    def forward(self, *args: Any) -> Tensor:
        first = next((a for a in args if isinstance(a, Tensor) and a.dim() > 0), None)
        if first is None:
            raise WrapgradValueError("StackedView: expected a batch tensor among the arguments")
        total = first.shape[0]
        base = self.k * self.unit
        if total % base:
            raise WrapgradValueError(
                f"strategy: 'vmap' got a batch of {total} rows, not a multiple of the "
                f"{base} rows it was built for (the method regroups the batch); use "
                f"strategy='loop'"
            )
        s = total // base
        dims = []
        batched = []
        for a in args:
            if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == total:
                batched.append(self._split(a, s))
                dims.append(0)
            else:
                batched.append(a)
                dims.append(None)
        model = self.model

        def one(tensors: dict[str, Tensor], *xs: Any) -> Tensor:
            return torch.func.functional_call(model, tensors, xs, tie_weights=True, strict=False)

        out = torch.func.vmap(one, in_dims=(0, *dims), randomness="different")(
            self.stacks, *batched
        )
        if not isinstance(out, Tensor):
            raise WrapgradTypeError(
                f"model: expected the forward pass to return a tensor, got {type(out).__name__}"
            )
        return self._merge(out, s)


# -- the sample plan ---------------------------------------------------------------------------
class _Sampler:
    """Draws weight and input samples from per-sample seeds (chunk-independent)."""

    def __init__(
        self,
        model: nn.Module,
        inputs: tuple[Tensor, ...],
        weight_sampler: Any,
        input_sampler: Any,
        n_models: int,
        n_inputs: int,
        generator: torch.Generator,
    ) -> None:
        self.model = model
        self.inputs = inputs
        self.device = inputs[0].device
        self.weight_sampler = weight_sampler
        self.input_sampler = input_sampler
        self.seeds = derive_seeds(generator, (n_models, n_inputs + 1))
        self.names: list[str] = []
        self.params: dict[str, Tensor] = {}
        if weight_sampler is not None:
            self.names = list(weight_sampler.parameter_names(model))
            named = dict(model.named_parameters())
            self.params = {n: named[n] for n in self.names}
        self._cache: dict[int, dict[str, Tensor]] = {}

    def weights(self, k: int) -> dict[str, Tensor]:
        """Weight sample ``k``: name -> tensor (cached for the chunk being built)."""
        if k not in self._cache:
            g = torch.Generator(device=self.device)
            g.manual_seed(int(self.seeds[k][0]))
            self._cache = {
                k: {
                    n: self.weight_sampler.sample(w, 1, generator=_on(g, w))[0]
                    for n, w in self.params.items()
                }
            }
        return self._cache[k]

    def stacked_weights(self, ks: Sequence[int]) -> dict[str, Tensor]:
        """Weight samples ``ks`` stacked: name -> ``(len(ks), *shape)``; the same numbers as
        :meth:`weights` gives one at a time."""
        if not getattr(self.weight_sampler, "supports_out", False):
            samples = [self.weights(k) for k in ks]
            return {n: torch.stack([s[n] for s in samples]) for n in self.names}
        stacks = {
            n: torch.empty((len(ks), *w.shape), dtype=w.dtype, device=w.device)
            for n, w in self.params.items()
        }
        for i, k in enumerate(ks):
            g = torch.Generator(device=self.device)
            g.manual_seed(int(self.seeds[k][0]))
            for n, w in self.params.items():
                self.weight_sampler.sample(w, 1, generator=_on(g, w), out=stacks[n][i : i + 1])
        return stacks

    def noisy_inputs(self, items: Sequence[tuple[int, int]]) -> tuple[Tensor, ...]:
        """The inputs for ``items`` ((k, j) pairs), concatenated sample-major."""
        if self.input_sampler is None:
            if len(items) == 1:
                return tuple(x.detach() for x in self.inputs)
            return tuple(x.detach().repeat(len(items), *([1] * (x.dim() - 1))) for x in self.inputs)
        per_input: list[list[Tensor]] = [[] for _ in self.inputs]
        for k, j in items:
            g = torch.Generator(device=self.device)
            g.manual_seed(int(self.seeds[k][j + 1]))
            for i, x in enumerate(self.inputs):
                if x.is_floating_point():
                    per_input[i].append(self.input_sampler.sample(x, 1, generator=g)[0])
                else:
                    per_input[i].append(x)
        return tuple(torch.cat(parts) for parts in per_input)


def _on(g: torch.Generator, t: Tensor) -> torch.Generator:
    if g.device.type != t.device.type:
        raise WrapgradValueError(
            f"model: its parameters are on {t.device} but the inputs are on {g.device}; "
            f"move the inputs to the model's device"
        )
    return g


def _plan(
    n_models: int,
    n_inputs: int,
    rows_per_item: int,
    max_batch: int,
    by_model: bool,
    one_input: bool = False,
) -> list[tuple[list[int], int, int]]:
    """Chunks as (model indices, first input index, last input index + 1), in sample order.

    ``by_model``: several weight samples per chunk (vmap), each with all its input samples;
    ``one_input``: at most one input sample per weight sample in a chunk.
    """
    per = max(1, max_batch // max(1, rows_per_item))
    if one_input:
        per = per if by_model and n_inputs == 1 else 1
    chunks: list[tuple[list[int], int, int]] = []
    if by_model and per >= n_inputs:
        km = max(1, per // n_inputs)
        for k0 in range(0, n_models, km):
            chunks.append((list(range(k0, min(n_models, k0 + km))), 0, n_inputs))
        return chunks
    jn = min(per, n_inputs)
    for k in range(n_models):
        for j0 in range(0, n_inputs, jn):
            chunks.append(([k], j0, min(n_inputs, j0 + jn)))
    return chunks


def _flatten_output(out: Any, rows: int, name: str) -> tuple[list[Tensor], Callable[..., Any]]:
    """The explainer's output as a list of batch-first tensors, and how to rebuild it."""
    if isinstance(out, Tensor):
        parts, rebuild = [out], lambda xs: xs[0]
    elif isinstance(out, (tuple, list)) and out and all(isinstance(t, Tensor) for t in out):
        kind = type(out)
        parts, rebuild = list(out), lambda xs: kind(xs)
    else:
        raise WrapgradTypeError(
            f"enhancer: {name} returned {type(out).__name__}; an enhancer aggregates tensors "
            f"(or tuples of tensors) only (return_convergence_delta is not supported)"
        )
    for t in parts:
        if t.dim() == 0 or t.shape[0] != rows:
            raise WrapgradValueError(
                f"enhancer: {name} returned a map of shape {tuple(t.shape)} for a batch of "
                f"{rows} rows; the enhancer cannot apply to a method whose output is not batch "
                f"first"
            )
    return parts, rebuild


# -- the engine ------------------------------------------------------------------------------------
def monte_carlo(
    explainer: Callable[..., Any],
    model: nn.Module,
    inputs: Tensor | tuple[Tensor, ...],
    target: Any = None,
    *,
    weight_sampler: Any = None,
    input_sampler: Any = None,
    n_models: int = 1,
    n_inputs: int = 1,
    aggregate: str = "mean",
    generator: torch.Generator | None = None,
    seed: int | None = None,
    strategy: str = "auto",
    max_batch: int | None = None,
    return_samples: bool = False,
    progress: bool | None = None,
    attribute_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Aggregate ``explainer`` over ``n_models × n_inputs`` Monte-Carlo samples.

    Args:
        explainer: an Explainer ``(model, inputs, target, **kw) -> maps``.
        model: the user's model (never mutated).
        inputs: a batch ``(B, ...)`` or a tuple of batches.
        target: Captum's target forms; tiled with the batch.
        weight_sampler: an object with ``parameter_names(model)`` and
            ``sample(w, n, generator=g)`` (e.g. ``WeightMultiplicative``), or None.
        input_sampler: an object with ``sample(x, n, generator=g)`` (e.g. ``InputGaussian``),
            or None. Integer inputs (token ids) are passed unperturbed.
        n_models: K, weight samples.
        n_inputs: N, input samples per weight sample.
        aggregate: ``"mean"``, ``"mean_square"`` (SmoothGrad²) or ``"variance"`` (VarGrad,
            unbiased: ``1/(S-1) Σ (E_s - Ē)²``).
        generator: drives every draw (on the inputs' device); or ``seed``.
        strategy: ``"auto"``, ``"vmap"`` or ``"loop"`` (see :func:`pick_strategy`).
        max_batch: rows per explainer call (default 128 on CPU, 4096 on CUDA).
        return_samples: also return the per-sample maps, shape ``(S, B, ...)`` (sample ``k·N+j``).
        progress: show a tqdm bar (None: only for runs of more than 20 chunks).
        attribute_kwargs: keyword arguments for the explainer (``baselines``, ``n_steps``,
            ``additional_forward_args``, ...); per-sample tensors are tiled.

    Returns:
        The aggregate, shaped like the explainer's output; with ``return_samples``, a pair
        ``(aggregate, samples)``.
    """
    kwargs = dict(attribute_kwargs or {})
    if aggregate not in AGGREGATES:
        raise WrapgradValueError(
            f"aggregate: expected 'mean', 'mean_square' or 'variance', got {aggregate!r}"
        )
    n_models = check_positive_int(n_models, "n_models")
    n_inputs = check_positive_int(n_inputs, "n_inputs")
    xs, was_tuple = as_input_tuple(inputs)
    batch = int(xs[0].shape[0])
    device = xs[0].device
    if max_batch is None:
        max_batch = default_max_batch(device)
    max_batch = check_positive_int(max_batch, "max_batch")
    name = _explainer_name(explainer)
    if kwargs.get("return_convergence_delta"):
        raise WrapgradValueError(
            "return_convergence_delta: enhancers aggregate attributions only; drop it"
        )
    if weight_sampler is not None and getattr(weight_sampler, "is_zero", False):
        weight_sampler = None
    if input_sampler is not None and getattr(input_sampler, "is_zero", False):
        input_sampler = None
    if input_sampler is not None and not any(x.is_floating_point() for x in xs):
        raise WrapgradValueError(
            f"inputs: input noise (SmoothGrad, FusionGrad) needs floating-point inputs, got "
            f"dtype {xs[0].dtype} (token ids?); use noisegrad, whose noise is on the weights"
        )
    gen = make_generator(device, seed=seed, generator=generator)
    if strategy not in STRATEGIES:
        raise WrapgradValueError(f"strategy: expected 'auto', 'vmap' or 'loop', got {strategy!r}")
    # Without weight noise there is one model and nothing to vmap over: the strategy is moot.
    use_strategy = "plain"
    if weight_sampler is not None:
        use_strategy = pick_strategy(explainer, device, strategy, kwargs)
    training = _in_training(model)
    stochastic = traits_of(explainer).stochastic
    # Draws the method or the model make themselves (GradientShap, Lime, dropout in training
    # mode) come from torch's global RNG: seed it from ``gen`` for this call, then restore it.
    own_draws = stochastic or training

    # No noise at all: every sample is the base explanation (exactly, for a deterministic method).
    if weight_sampler is None and input_sampler is None and not stochastic:
        view: Any = FunctionalView(model, _buffer_copies(model, None)) if training else model
        with _seeded_global_rng(gen, device, own_draws):
            out = explainer(view, inputs, target, **kwargs)
        parts, rebuild = _flatten_output(out, batch, name)
        total = n_models * n_inputs
        agg = [
            p
            if aggregate == "mean"
            else p * p
            if aggregate == "mean_square"
            else torch.zeros_like(p)
            for p in parts
        ]
        agg_out = rebuild([a.detach() for a in agg])
        if return_samples:
            samples = rebuild(
                [p.detach().unsqueeze(0).expand(total, *p.shape).clone() for p in parts]
            )
            return agg_out, samples
        return agg_out

    if weight_sampler is None:
        # Weights are shared: fold the K copies into the input axis (one model, K·N inputs).
        n_inputs, n_models = n_models * n_inputs, 1
    sampler = _Sampler(model, xs, weight_sampler, input_sampler, n_models, n_inputs, gen)
    layout = _vmap_layout(explainer) if use_strategy == "vmap" else None
    budget = max_batch
    if device.type == "cuda" and weight_sampler is not None:
        budget = _cuda_budget(sampler, batch, n_inputs, budget)
    # BatchNorm in training mode normalises with the statistics of the batch it is given: each
    # noisy copy of the batch must be its own call (or its own vmap slice), as the user's
    # model would see it, and as chunking must not change.
    chunks = _plan(
        n_models,
        n_inputs,
        batch,
        budget,
        by_model=use_strategy == "vmap",
        one_input=_batch_statistics(model),
    )
    moments: list[RunningMoments] | None = None
    kept: list[list[Tensor]] = []  # per chunk, per output part: (c, B, ...)
    rebuild: Callable[..., Any] | None = None
    bar = _progress(len(chunks), progress, name)
    with _seeded_global_rng(gen, device, own_draws):
        try:
            i = 0
            while i < len(chunks):
                ks, j0, j1 = chunks[i]
                try:
                    parts, rebuild = _run_chunk(
                        explainer,
                        model,
                        sampler,
                        ks,
                        j0,
                        j1,
                        target,
                        kwargs,
                        batch,
                        use_strategy,
                        layout,
                        training,
                        was_tuple,
                        name,
                    )
                except torch.cuda.OutOfMemoryError:
                    smaller = _split_chunk(chunks[i])
                    if smaller is None:
                        raise
                    chunks[i : i + 1] = smaller
                    torch.cuda.empty_cache()
                    continue
                c = len(ks) * (j1 - j0)
                if moments is None:
                    moments = [
                        RunningMoments(
                            track_square=aggregate == "mean_square",
                            track_variance=aggregate == "variance",
                        )
                        for _ in parts
                    ]
                shaped = [p.detach().reshape(c, batch, *p.shape[1:]) for p in parts]
                for m, p in zip(moments, shaped, strict=True):
                    m.update(p)
                if return_samples:
                    kept.append(shaped)
                if bar is not None:
                    bar.update(1)
                i += 1
        finally:
            if bar is not None:
                bar.close()
    assert moments is not None
    assert rebuild is not None
    result = rebuild([m.result(aggregate) for m in moments])
    if return_samples:
        n_parts = len(moments)
        samples = rebuild([torch.cat([chunk[p] for chunk in kept]) for p in range(n_parts)])
        return result, samples
    return result


def _split_chunk(chunk: tuple[list[int], int, int]) -> list[tuple[list[int], int, int]] | None:
    ks, j0, j1 = chunk
    if len(ks) > 1:
        h = len(ks) // 2
        return [(ks[:h], j0, j1), (ks[h:], j0, j1)]
    if j1 - j0 > 1:
        h = (j0 + j1) // 2
        return [(ks, j0, h), (ks, h, j1)]
    return None


def _cuda_budget(sampler: _Sampler, batch: int, n_inputs: int, max_batch: int) -> int:
    """Cap the rows per call so stacked weights stay under a quarter of free CUDA memory."""
    try:
        free, _ = torch.cuda.mem_get_info(sampler.device)
    except Exception:  # pragma: no cover - no CUDA runtime
        return max_batch
    pbytes = sum(p.numel() * p.element_size() for p in sampler.params.values())
    if pbytes == 0:
        return max_batch
    models = max(1, int(0.25 * free // pbytes))
    return max(1, min(max_batch, models * n_inputs * batch))


def _progress(total: int, progress: bool | None, name: str) -> Any:
    show = total > 20 if progress is None else bool(progress)
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"enhancing {name}", unit="chunk", leave=False)


def _run_chunk(
    explainer: Callable[..., Any],
    model: nn.Module,
    sampler: _Sampler,
    ks: list[int],
    j0: int,
    j1: int,
    target: Any,
    kwargs: dict[str, Any],
    batch: int,
    mode: str,
    layout: str | None,
    training: bool,
    was_tuple: bool,
    name: str,
) -> tuple[list[Tensor], Callable[..., Any]]:
    items = [(k, j) for k in ks for j in range(j0, j1)]
    c = len(items)
    xs = sampler.noisy_inputs(items)
    if traits_of(explainer).requires_grad_inputs:
        xs = tuple(x.requires_grad_() if x.is_floating_point() else x for x in xs)
    chunk_inputs: Any = xs if was_tuple else xs[0]
    tgt = _tile_target(target, c, batch)
    kw = {
        key: (_tile(v, c, batch) if key in _PER_SAMPLE_KWARGS else v) for key, v in kwargs.items()
    }
    if mode == "vmap":
        stacks = sampler.stacked_weights(ks)
        if training:
            stacks.update(_buffer_copies(model, len(ks)))
        assert layout is not None
        view: Any = StackedView(model, stacks, len(ks), (j1 - j0) * batch, layout)
    elif mode == "loop":
        tensors = dict(sampler.weights(ks[0]))
        if training:
            tensors.update(_buffer_copies(model, None))
        view = FunctionalView(model, tensors)
    else:
        view = FunctionalView(model, _buffer_copies(model, None)) if training else model
    out = explainer(view, chunk_inputs, tgt, **kw)
    return _flatten_output(out, c * batch, name)


# -- noisy forward passes (for calibration) -------------------------------------------------------
@torch.no_grad()
def noisy_forward(
    model: nn.Module,
    inputs: Tensor | tuple[Tensor, ...],
    *,
    weight_sampler: Any = None,
    input_sampler: Any = None,
    n_models: int = 1,
    n_inputs: int = 1,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    max_batch: int | None = None,
    additional_forward_args: Any = None,
    strategy: str = "auto",
) -> Tensor:
    """Model outputs under weight and/or input noise, batched: shape ``(K, N, B, *out)``.

    Entry ``[k, j]`` is ``f(x + ξ_{k,j}; Ŵ ⊙ η_k)``; on accelerators the ``K`` weight samples
    of a chunk run as one ``vmap``-ed call, on CPU as one functional call each. Draws follow the same per-sample seed table as
    :func:`monte_carlo`, so the same generator state gives the same outputs. Runs without
    gradients; in training mode buffers are copied, never updated.

    Args:
        model: the model (never mutated).
        inputs: a batch ``(B, ...)`` or a tuple of batches.
        weight_sampler: e.g. ``WeightMultiplicative(sigma=0.1)``, or None.
        input_sampler: e.g. ``InputGaussian(noise_level=0.1)``, or None.
        n_models: K.
        n_inputs: N per weight sample.
        generator: drives every draw (on the inputs' device); or ``seed``.
        max_batch: rows per forward call (default 128 on CPU, 4096 on CUDA).
        additional_forward_args: extra positional arguments for the model (tiled if batch-first).
        strategy: ``"auto"`` (``"vmap"`` on accelerators, ``"loop"`` on CPU), ``"vmap"`` or
            ``"loop"``.

    Example::

        logits = noisy_forward(model, x, weight_sampler=WeightMultiplicative(0.2),
                               n_models=16, seed=0)        # (16, 1, B, C)
        acc = (logits.argmax(-1) == y).float().mean()
    """
    n_models = check_positive_int(n_models, "n_models")
    n_inputs = check_positive_int(n_inputs, "n_inputs")
    xs, _ = as_input_tuple(inputs)
    batch = int(xs[0].shape[0])
    device = xs[0].device
    max_batch = check_positive_int(
        default_max_batch(device) if max_batch is None else max_batch, "max_batch"
    )
    if weight_sampler is not None and getattr(weight_sampler, "is_zero", False):
        weight_sampler = None
    if input_sampler is not None and getattr(input_sampler, "is_zero", False):
        input_sampler = None
    gen = make_generator(device, seed=seed, generator=generator)
    sampler = _Sampler(model, xs, weight_sampler, input_sampler, n_models, n_inputs, gen)
    training = _in_training(model)
    if additional_forward_args is None:
        extra: tuple[Any, ...] = ()
    elif isinstance(additional_forward_args, tuple):
        extra = additional_forward_args
    else:
        extra = (additional_forward_args,)
    # vmap over stacked weights on accelerators; one functional call per weight sample on CPU
    # (faster there, see pick_strategy).
    if strategy not in STRATEGIES:
        raise WrapgradValueError(f"strategy: expected 'auto', 'vmap' or 'loop', got {strategy!r}")
    vmap = strategy == "vmap" or (strategy == "auto" and device.type != "cpu")
    stacked = weight_sampler is not None and vmap
    chunks = _plan(
        n_models, n_inputs, batch, max_batch, by_model=stacked, one_input=_batch_statistics(model)
    )
    per_model: list[list[Tensor]] = [[] for _ in range(n_models)]
    with _seeded_global_rng(gen, device, training):
        for ks, j0, j1 in chunks:
            items = [(k, j) for k in ks for j in range(j0, j1)]
            c = len(items)
            chunk = sampler.noisy_inputs(items)
            args = (*chunk, *_tile(extra, c, batch))
            if stacked:
                stacks = sampler.stacked_weights(ks)
                if training:
                    stacks.update(_buffer_copies(model, len(ks)))
                out = StackedView(model, stacks, len(ks), (j1 - j0) * batch, "block")(*args)
            else:
                tensors = dict(sampler.weights(ks[0])) if weight_sampler is not None else {}
                if training:
                    tensors.update(_buffer_copies(model, None))
                out = FunctionalView(model, tensors)(*args)
            out = out.reshape(len(ks), j1 - j0, batch, *out.shape[1:])
            for i, k in enumerate(ks):
                per_model[k].append(out[i])
    return torch.stack([torch.cat(parts, dim=0) for parts in per_model])
