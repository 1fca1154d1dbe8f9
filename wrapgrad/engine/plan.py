"""The chunk plan: which samples run together in one explainer call, and how weight samples run.

Samples are indexed ``(k, j)``: weight sample ``k`` and input sample ``j`` of it. A
:class:`Chunk` is a set of weight samples with a range of input samples each; its rows are laid
out sample-major (rows ``[i·B, (i+1)·B)`` are its ``i``-th sample). Chunks hold at most
``max_batch`` rows and come in sample order, so the streamed reduction and the kept samples are
in the order ``k · N + j``.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch

from wrapgrad.errors import WrapgradValueError
from wrapgrad.records import traits_of

from .config import check_strategy

__all__ = ["Chunk", "cuda_row_budget", "pick_strategy", "plan_chunks", "vmap_layout"]


@attrs.frozen
class Chunk:
    """Weight samples ``models``, each with input samples ``start .. stop - 1``."""

    models: tuple[int, ...]
    start: int
    stop: int

    @property
    def inputs(self) -> int:
        """Input samples per weight sample."""
        return self.stop - self.start

    @property
    def samples(self) -> int:
        """Samples in the chunk (``len(models) · inputs``)."""
        return len(self.models) * self.inputs

    def items(self) -> list[tuple[int, int]]:
        """The ``(k, j)`` pairs, in row order."""
        return [(k, j) for k in self.models for j in range(self.start, self.stop)]

    def halves(self) -> tuple[Chunk, Chunk] | None:
        """The chunk split in two (by weight samples first), or None for a single sample."""
        if len(self.models) > 1:
            h = len(self.models) // 2
            return Chunk(self.models[:h], self.start, self.stop), Chunk(
                self.models[h:], self.start, self.stop
            )
        if self.inputs > 1:
            h = (self.start + self.stop) // 2
            return Chunk(self.models, self.start, h), Chunk(self.models, h, self.stop)
        return None


def plan_chunks(
    n_models: int,
    n_inputs: int,
    rows_per_sample: int,
    max_batch: int,
    *,
    by_model: bool,
    one_sample: bool = False,
) -> list[Chunk]:
    """Chunks of at most ``max_batch`` rows (at least one sample each), in sample order.

    ``by_model``: several weight samples per chunk (vmap), each with all its input samples;
    otherwise one weight sample per chunk. ``one_sample``: one sample per chunk, whatever
    ``max_batch`` and ``by_model`` (the method or the model draws from the global RNG, reseeded
    for every sample: see :mod:`wrapgrad.engine.rng`; and BatchNorm in training mode then
    normalises each noisy copy of the batch on its own).
    """
    if one_sample:
        return [Chunk((k,), j, j + 1) for k in range(n_models) for j in range(n_inputs)]
    per = max(1, max_batch // max(1, rows_per_sample))
    if by_model and per >= n_inputs:
        km = max(1, per // n_inputs)
        return [
            Chunk(tuple(range(k0, min(n_models, k0 + km))), 0, n_inputs)
            for k0 in range(0, n_models, km)
        ]
    jn = min(per, n_inputs)
    return [
        Chunk((k,), j0, min(n_inputs, j0 + jn))
        for k in range(n_models)
        for j0 in range(0, n_inputs, jn)
    ]


def cuda_row_budget(
    device: torch.device, weight_bytes: int, rows_per_model: int, max_batch: int
) -> int:
    """Cap the rows per call so that stacked weight samples stay under a quarter of the free
    CUDA memory (``weight_bytes`` per weight sample, ``rows_per_model`` rows each)."""
    try:
        free, _ = torch.cuda.mem_get_info(device)
    except Exception:  # pragma: no cover - no CUDA runtime
        return max_batch
    if weight_bytes == 0:
        return max_batch
    models = max(1, int(0.25 * free // weight_bytes))
    return max(1, min(max_batch, models * rows_per_model))


def vmap_layout(explainer: Any) -> str | None:
    """How the explainer lays out expanded batches (its traits' ``vmap_layout``), or None if it
    cannot run under vmap (hooks, another family, an unknown layout)."""
    traits = traits_of(explainer)
    if traits.uses_hooks or traits.family != "attribution":
        return None
    return traits.vmap_layout


def pick_strategy(
    explainer: Any,
    device: torch.device,
    strategy: str = "auto",
    attribute_kwargs: dict[str, Any] | None = None,
    *,
    training: bool = False,
) -> str:
    """``"vmap"`` or ``"loop"`` for weight-noise samples of ``explainer`` on ``device``.

    ``"auto"`` picks ``"vmap"`` on accelerators for gradient-only methods (one large batched
    call keeps the device busy) and ``"loop"`` on CPU, where batched (grouped) convolutions and
    vmapped BatchNorm/pooling were slower than one plain call per weight sample
    (``benchmarks/bench_enhancers.py``, ``docs/benchmarks.md``); methods that use module hooks,
    draw per-example perturbations or split batches themselves (``internal_batch_size``) always
    loop. ``explainer=None`` (plain forward passes) counts as vmappable with the block layout.

    A method that draws random numbers itself (``traits.stochastic``: GradientShap, ...), or a
    model in training mode (``training``: dropout), runs one sample per call whatever the
    strategy (so that its draws do not depend on the chunking, see :mod:`wrapgrad.engine.rng`):
    stacking would gain nothing, so ``"auto"`` loops; an explicit ``"vmap"`` is honoured (one
    weight sample per ``vmap``-ed call, the loop's maps).
    """
    strategy = check_strategy(strategy)
    layout = "block" if explainer is None else vmap_layout(explainer)
    draws = training or (explainer is not None and traits_of(explainer).stochastic)
    splits = bool((attribute_kwargs or {}).get("internal_batch_size"))
    if strategy == "vmap":
        if layout is None:
            raise WrapgradValueError(
                f"strategy: 'vmap' cannot run {traits_of(explainer).name}: it relies on module "
                f"hooks or per-example evaluation; use strategy='loop' (or 'auto')"
            )
        if splits:
            raise WrapgradValueError(
                "strategy: 'vmap' cannot run with internal_batch_size (the method splits the "
                "batch itself); use strategy='loop' or drop internal_batch_size"
            )
        return "vmap"
    if (
        strategy == "loop"
        or layout is None
        or splits
        or draws
        or torch.device(device).type == "cpu"
    ):
        return "loop"
    return "vmap"
