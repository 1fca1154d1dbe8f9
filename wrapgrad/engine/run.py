"""One call of the engine: :class:`MonteCarloRun` holds the set-up that ``monte_carlo`` and
``noisy_forward`` share (inputs, noise sources, generator, strategy, draws, chunk plan) and runs
the chunks, reducing them as they stream."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from wrapgrad.checks import as_input_tuple
from wrapgrad.errors import WrapgradValueError
from wrapgrad.functional import tied_names
from wrapgrad.progress import progress_bar
from wrapgrad.records import ExplainerTraits, traits_of

from .batching import tile, tile_kwargs, tile_target
from .config import MonteCarloConfig, default_max_batch
from .layer_noise import LayerNoise
from .plan import Chunk, cuda_row_budget, pick_strategy, plan_chunks, vmap_layout
from .reduce import MonteCarloResult, Reduction, flatten_output
from .rng import (
    derive_seeds,
    global_rng_restored,
    make_generator,
    seed_global_rng,
    seeded_global_rng,
)
from .sampler import Sampler
from .views import StackedView, buffer_copies, in_training, model_view

__all__ = ["MonteCarloRun"]


def _as_args(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    return value if isinstance(value, tuple) else (value,)


class MonteCarloRun:
    """The set-up of one estimate, validated once, and its chunks.

    With an ``explainer`` the run explains (``K`` weight samples × ``N`` input samples, or
    ``K · N`` input samples of the one model when there is no weight noise); without one it runs
    plain forward passes (``K × N``, as calibration needs them).

    Args:
        config: the estimate's :class:`~wrapgrad.engine.MonteCarloConfig`.
        model: the user's model (never mutated).
        inputs: a batch ``(B, ...)`` or a tuple of batches.
        explainer: an Explainer, or None for forward passes.
        attribute_kwargs: keyword arguments for the explainer (per-sample tensors are tiled).
    """

    def __init__(
        self,
        config: MonteCarloConfig,
        model: nn.Module,
        inputs: Tensor | tuple[Tensor, ...],
        explainer: Any = None,
        attribute_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.xs, self.was_tuple = as_input_tuple(inputs)
        self.batch = int(self.xs[0].shape[0])
        self.device = self.xs[0].device
        self.explainer = explainer
        self.traits: ExplainerTraits = traits_of(explainer)
        self.kwargs = dict(attribute_kwargs or {})
        self.max_batch = config.max_batch or default_max_batch(self.device)
        ws, ins = config.weight_sampler, config.input_sampler
        self.weight_sampler = None if ws is None or ws.is_zero else ws
        self.input_sampler = None if ins is None or ins.is_zero else ins
        self.on_layer = self.input_sampler is not None and config.noise_layer is not None
        if explainer is not None:
            self._check_explainer()
        self.generator = make_generator(self.device, seed=config.seed, generator=config.generator)
        self.training = in_training(model)
        # The method (GradientShap, Lime, ...) or the model (dropout in training mode) draws from
        # the global RNGs: every sample runs in a call of its own, the global RNGs seeded from
        # the sample's own seed just before it, so its draws do not depend on the chunk plan.
        self.own_draws = self.training or (explainer is not None and self.traits.stochastic)
        self.strategy = "plain"
        if self.weight_sampler is not None:
            self.strategy = pick_strategy(
                explainer, self.device, config.strategy, self.kwargs, training=self.training
            )
        self.n_models, self.n_inputs = config.n_models, config.n_inputs
        if explainer is not None and self.weight_sampler is None:
            # Weights are shared: fold the K copies into the input axis (one model, K·N inputs).
            self.n_models, self.n_inputs = 1, config.n_models * config.n_inputs
        self.sampler: Sampler | None = None
        self.layer_noise: LayerNoise | None = None
        # Tied weights, found once per call, not by functional_call at every forward pass.
        self.tied = tied_names(model)

    # -- set-up ------------------------------------------------------------------------------
    def _check_explainer(self) -> None:
        if self.kwargs.get("return_convergence_delta"):
            raise WrapgradValueError(
                "return_convergence_delta: enhancers aggregate attributions only; drop it"
            )
        if self.config.create_graph and not self.traits.differentiable:
            raise WrapgradValueError(
                f"create_graph: {self.traits.name} does not keep a graph through its maps (its "
                f"traits are not differentiable); use a differentiable method (e.g. saliency, "
                f"input_x_gradient, integrated_gradients) or drop create_graph"
            )
        if (
            self.input_sampler is not None
            and not self.on_layer
            and not any(x.is_floating_point() for x in self.xs)
        ):
            raise WrapgradValueError(
                f"inputs: input noise (SmoothGrad, FusionGrad) needs floating-point inputs, got "
                f"dtype {self.xs[0].dtype} (token ids?); put the noise on the embeddings with "
                f"noise_layer='<embedding module>', or use noisegrad, whose noise is on the weights"
            )

    @property
    def _draws_nothing(self) -> bool:
        return self.weight_sampler is None and self.input_sampler is None

    def _prepare(self) -> list[Chunk]:
        """Draw the seed table, build the sampler and the chunk plan."""
        seeds = derive_seeds(self.generator, (self.n_models, self.n_inputs + 1))
        # Drawn after the table, so the engine's own draws do not change with own_draws.
        global_seeds = (
            derive_seeds(self.generator, (self.n_models, self.n_inputs)) if self.own_draws else None
        )
        self.sampler = Sampler(
            self.model,
            self.xs,
            seeds,
            self.weight_sampler,
            None if self.on_layer else self.input_sampler,
            keep_graph=self.config.create_graph,
            global_seeds=global_seeds,
            prefetch=self.strategy == "loop",
        )
        if self.on_layer:
            layout = self.traits.vmap_layout or "block"
            self.layer_noise = LayerNoise(
                self.model, str(self.config.noise_layer), self.input_sampler, self.sampler, layout
            )
        budget = self.max_batch
        if self.device.type == "cuda" and self.strategy == "vmap":
            budget = cuda_row_budget(
                self.device, self.sampler.weight_bytes, self.n_inputs * self.batch, budget
            )
        # A model in training mode runs one sample per call (own_draws): its dropout draws are
        # the sample's own, and BatchNorm normalises each noisy copy of the batch on its own, as
        # the user's model would see it, whatever the chunking.
        return plan_chunks(
            self.n_models,
            self.n_inputs,
            self.batch,
            budget,
            by_model=self.strategy == "vmap",
            one_sample=self.own_draws,
        )

    # -- chunks --------------------------------------------------------------------------------
    def _each(self, chunks: list[Chunk], fn: Callable[[Chunk], Any]) -> Iterator[tuple[Chunk, Any]]:
        """``(chunk, fn(chunk))`` in order; on CUDA out-of-memory a chunk is halved and retried."""
        chunks = list(chunks)
        bar = progress_bar(
            total=len(chunks), desc=f"enhancing {self.traits.name}", progress=self.config.progress
        )
        try:
            i = 0
            while i < len(chunks):
                try:
                    out = fn(chunks[i])
                except torch.cuda.OutOfMemoryError:
                    halves = chunks[i].halves()
                    if halves is None:
                        raise
                    chunks[i : i + 1] = halves
                    torch.cuda.empty_cache()
                    continue
                yield chunks[i], out
                bar.update(1)
                i += 1
        finally:
            bar.close()
            if self.sampler is not None:  # no draw left reading the parameters after the call
                self.sampler.close()

    def _view(self, chunk: Chunk) -> nn.Module:
        """The model for ``chunk``: stacked weight samples (vmap), one weight sample, or the
        model itself (with per-call buffer copies in training mode)."""
        assert self.sampler is not None
        if self.strategy == "vmap":
            stacks = self.sampler.stacked_weights(chunk.models)
            if self.training:
                stacks.update(buffer_copies(self.model, len(chunk.models)))
            layout = vmap_layout(self.explainer) if self.explainer is not None else "block"
            return StackedView(
                self.model, stacks, len(chunk.models), chunk.inputs * self.batch, layout or "block"
            )
        weights: dict[str, Tensor] = {}
        if self.weight_sampler is not None:
            k = chunk.models[0]
            weights = self.sampler.weights(k, then=k + 1 if k + 1 < self.n_models else None)
        return model_view(self.model, dict(weights), self.training, self.tied)

    def _seed_sample(self, chunk: Chunk) -> None:
        """With own draws: seed the global RNGs from the chunk's one sample's global seed (just
        before its call, after the engine's draws, which come from their own generators)."""
        if not self.own_draws:
            return
        assert self.sampler is not None
        ((k, j),) = chunk.items()  # one sample per chunk (plan_chunks' one_sample)
        seed_global_rng(self.sampler.global_seed(k, j), self.device)

    def _noise_context(self, chunk: Chunk) -> Any:
        if self.layer_noise is None:
            return contextlib.nullcontext()
        return self.layer_noise.active(chunk, self.batch)

    def _grad_ready(self, x: Tensor) -> Tensor:
        if not x.is_floating_point() or x.requires_grad:
            return x
        return x.detach().requires_grad_()

    def _explain_chunk(self, chunk: Chunk, target: Any) -> tuple[list[Tensor], Callable[..., Any]]:
        assert self.sampler is not None
        c = chunk.samples
        xs = self.sampler.inputs_for(chunk)
        if self.traits.requires_grad_inputs:
            xs = tuple(self._grad_ready(x) for x in xs)
        kw = tile_kwargs(self.kwargs, c, self.batch)
        if self.config.create_graph:
            kw["create_graph"] = True
        view = self._view(chunk)
        self._seed_sample(chunk)
        with self._noise_context(chunk):
            out = self.explainer(
                view, xs if self.was_tuple else xs[0], tile_target(target, c, self.batch), **kw
            )
        return flatten_output(out, c * self.batch, self.traits.name)

    # -- the two kinds of runs -----------------------------------------------------------------
    def explain(self, target: Any = None) -> Any:
        """The aggregate over all samples (a :class:`MonteCarloResult` with ``return_samples``)."""
        config = self.config
        # Draws the method or the model make themselves (GradientShap, Lime, dropout in training
        # mode) come from the global RNGs: seeded per sample (_seed_sample), restored at the end.
        if self._draws_nothing and not self.traits.stochastic:
            return self._explain_once(target, self.own_draws)
        chunks = self._prepare()
        reduction = Reduction(
            config.aggregate,
            self.batch,
            abs_per_sample=config.abs_per_sample,
            keep_graph=config.create_graph,
            keep_samples=config.return_samples,
        )
        with global_rng_restored(self.device, self.own_draws):
            for chunk, (parts, rebuild) in self._each(
                chunks, lambda ch: self._explain_chunk(ch, target)
            ):
                reduction.add(parts, chunk.samples, rebuild)
        return reduction.result()

    def _explain_once(self, target: Any, own_draws: bool) -> Any:
        """No noise and a deterministic method: every sample is the base explanation, exactly."""
        config = self.config
        view = model_view(self.model, {}, self.training, self.tied)
        xs = self.xs if config.create_graph else tuple(x.detach() for x in self.xs)
        if self.traits.requires_grad_inputs:
            xs = tuple(self._grad_ready(x) for x in xs)
        kw = dict(self.kwargs, create_graph=True) if config.create_graph else self.kwargs
        with seeded_global_rng(self.generator, self.device, own_draws):
            out = self.explainer(view, xs if self.was_tuple else xs[0], target, **kw)
        parts, rebuild = flatten_output(out, self.batch, self.traits.name)
        if not config.create_graph:
            parts = [p.detach() for p in parts]
        if config.abs_per_sample:
            parts = [p.abs() for p in parts]
        agg = {
            "mean": lambda p: p,
            "mean_square": lambda p: p * p,
            "variance": torch.zeros_like,
        }[config.aggregate]
        result = rebuild([agg(p) for p in parts])
        if not config.return_samples:
            return result
        total = self.n_models * self.n_inputs
        samples = rebuild([p.unsqueeze(0).expand(total, *p.shape).clone() for p in parts])
        return MonteCarloResult(result, samples)

    def forward(self, additional_forward_args: Any = None) -> Tensor:
        """Model outputs for every sample: shape ``(K, N, B, *out)``."""
        extra = _as_args(additional_forward_args)
        chunks = self._prepare()
        per_model: list[list[Tensor]] = [[] for _ in range(self.n_models)]

        def one(chunk: Chunk) -> Tensor:
            assert self.sampler is not None
            c = chunk.samples
            view = self._view(chunk)
            args = (*self.sampler.inputs_for(chunk), *tile(extra, c, self.batch))
            self._seed_sample(chunk)
            with self._noise_context(chunk):
                return view(*args)

        with global_rng_restored(self.device, self.own_draws):
            for chunk, out in self._each(chunks, one):
                out = out.reshape(len(chunk.models), chunk.inputs, self.batch, *out.shape[1:])
                for i, k in enumerate(chunk.models):
                    per_model[k].append(out[i])
        return torch.stack([torch.cat(parts, dim=0) for parts in per_model])
