"""Draws of one estimate: weight samples and noisy inputs from per-sample seeds.

Every weight sample ``k`` and every input sample ``(k, j)`` has its own seed in a table drawn
once from the estimate's generator (:func:`~wrapgrad.engine.rng.derive_seeds`), so a sample's
draws are the same whichever chunk it lands in. The perturbers are called exactly as their
protocols say (:class:`~wrapgrad.protocols.WeightPerturber`:
``sample(w, 1, generator=g)`` once per selected parameter, in ``parameter_names`` order;
:class:`~wrapgrad.protocols.InputPerturber`: ``sample(x, 1, generator=g)`` once per input
tensor).

A run whose method or model draws from the global RNGs (GradientShap, Lime, dropout in training
mode) also holds a second table, one global seed per sample ``(k, j)``
(:meth:`Sampler.global_seed`), which the run seeds the global RNGs from before that sample's
call (see :mod:`wrapgrad.engine.rng`).

Without ``keep_graph`` the draws are made without autograd, from detached tensors; with it
(differentiable maps) from the parameters and inputs themselves, so ``Ŵ ⊙ η`` and ``x + ξ``
stay connected to ``Ŵ`` and ``x``.

**Drawing one weight sample ahead.** On the loop strategy the run asks for weight sample
``k + 1`` while sample ``k`` is explained (``weights(k, then=k + 1)``); with ``prefetch`` the
sampler then draws it on a helper thread, so drawing overlaps the model's forward and backward
passes instead of adding to them (the NoiseGrad authors' procedure draws between passes:
``docs/benchmarks.md``). The draws are the same numbers either way: each weight sample comes
from a generator seeded from its own seed, whichever thread draws it. Each thread that
explains has its own helper thread (so two workers of ``run_sharded`` do not queue behind one
another), made on first use and made again in a child after ``fork``; a draw left pending when
a run ends, normally or by an error, is awaited before the run returns (:meth:`Sampler.close`),
so no draw reads the parameters after the call.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor, nn

from wrapgrad.errors import WrapgradValueError

from .plan import Chunk
from .rng import sub_generator

__all__ = ["PREFETCH_BYTES", "Sampler"]

#: The largest weight sample drawn ahead on the helper thread (bytes): a sample drawn ahead
#: lives beside the one in use, so larger models draw in turn and hold one sample at a time.
PREFETCH_BYTES = 256 * 2**20

_helpers = threading.local()


def _helper_thread() -> ThreadPoolExecutor:
    """The calling thread's drawing thread (made on first use)."""
    helper = getattr(_helpers, "executor", None)
    if helper is None:
        helper = _helpers.executor = ThreadPoolExecutor(1, thread_name_prefix="wrapgrad-draw")
    return helper


def _forget_helpers() -> None:
    """In a forked child: the parent's threads do not exist there; make new ones on use."""
    global _helpers
    _helpers = threading.local()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helpers)


class Sampler:
    """Weight and input draws of one estimate.

    Args:
        model: the user's model (read, never changed).
        inputs: the batch as a tuple of tensors ``(B, ...)``.
        seeds: the seed table, ``n_models`` rows of ``1 + n_inputs`` seeds (weights first).
        weight_sampler: a weight perturber, or None.
        input_sampler: an input perturber for the inputs, or None (no noise on the inputs).
        keep_graph: draw with autograd, from the tensors themselves (differentiable maps).
        global_seeds: ``n_models`` rows of ``n_inputs`` global-RNG seeds, one per sample, for
            runs whose method or model draws from the global RNGs; None otherwise.
        prefetch: draw the weight sample named by :meth:`weights`' ``then`` on the helper
            thread (ignored with ``keep_graph``, off the CPU, and above
            :data:`PREFETCH_BYTES`).
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: tuple[Tensor, ...],
        seeds: list[list[int]],
        weight_sampler: Any = None,
        input_sampler: Any = None,
        keep_graph: bool = False,
        global_seeds: list[list[int]] | None = None,
        prefetch: bool = False,
    ) -> None:
        self.device = inputs[0].device
        self.inputs = inputs if keep_graph else tuple(x.detach() for x in inputs)
        self.seeds = seeds
        self.weight_sampler = weight_sampler
        self.input_sampler = input_sampler
        self.keep_graph = keep_graph
        self.global_seeds = global_seeds
        self.params: dict[str, Tensor] = {}
        if weight_sampler is not None:
            named = dict(model.named_parameters())
            for name in weight_sampler.parameter_names(model):
                p = named[name]
                if p.device.type != self.device.type:
                    raise WrapgradValueError(
                        f"model: its parameters are on {p.device} but the inputs are on "
                        f"{self.device}; move the inputs to the model's device"
                    )
                self.params[name] = p if keep_graph else p.detach()
        self._cached: tuple[int, dict[str, Tensor]] | None = None
        self._ahead: tuple[int, Future[dict[str, Tensor]]] | None = None
        self.prefetch = (
            prefetch
            and not keep_graph
            and self.device.type == "cpu"
            and 0 < self.weight_bytes <= PREFETCH_BYTES
        )

    @property
    def weight_bytes(self) -> int:
        """Bytes of one weight sample."""
        return sum(p.numel() * p.element_size() for p in self.params.values())

    def _grad_mode(self) -> Any:
        return torch.enable_grad() if self.keep_graph else torch.no_grad()

    def generator(self, k: int, j: int | None = None) -> torch.Generator:
        """The generator of weight sample ``k`` (``j=None``) or of input sample ``(k, j)``."""
        return sub_generator(self.device, self.seeds[k][0 if j is None else j + 1])

    def global_seed(self, k: int, j: int) -> int:
        """The global-RNG seed of sample ``(k, j)`` (a run without ``global_seeds``: an error)."""
        if self.global_seeds is None:
            raise WrapgradValueError("Sampler: this run draws no global-RNG seeds")
        return int(self.global_seeds[k][j])

    def _draw(self, k: int) -> dict[str, Tensor]:
        g = self.generator(k)
        with self._grad_mode():
            return {
                n: self.weight_sampler.sample(w, 1, generator=g)[0] for n, w in self.params.items()
            }

    def weights(self, k: int, then: int | None = None) -> dict[str, Tensor]:
        """Weight sample ``k``: name -> tensor (the last one is cached). ``then``: the sample
        the caller will ask for next, drawn ahead on the helper thread with ``prefetch``."""
        if self._cached is None or self._cached[0] != k:
            ahead, self._ahead = self._ahead, None
            drawn = ahead[1].result() if ahead is not None and ahead[0] == k else self._draw(k)
            self._cached = (k, drawn)
        if self.prefetch and then is not None and (self._ahead is None or self._ahead[0] != then):
            try:
                future = _helper_thread().submit(contextvars.copy_context().run, self._draw, then)
            except RuntimeError:  # interpreter shutting down: no new threads; draw in turn
                self.prefetch = False
            else:
                self._ahead = (then, future)
        return self._cached[1]

    def close(self) -> None:
        """Wait for a draw left pending on the helper thread and drop it (its error, if any, is
        not raised: the run did not ask for that sample)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead[1].exception()

    def stacked_weights(self, ks: Sequence[int]) -> dict[str, Tensor]:
        """Weight samples ``ks`` stacked: name -> ``(len(ks), *shape)``; the same numbers as
        :meth:`weights` gives one at a time."""
        samples = [self.weights(k) for k in ks]
        with self._grad_mode():
            return {n: torch.stack([s[n] for s in samples]) for n in self.params}

    def inputs_for(self, chunk: Chunk) -> tuple[Tensor, ...]:
        """The inputs of ``chunk``'s samples, concatenated sample-major; integer inputs (token
        ids) are repeated unperturbed."""
        items = chunk.items()
        c = len(items)
        if self.input_sampler is None:
            if c == 1:
                return self.inputs
            return tuple(x.repeat(c, *([1] * (x.dim() - 1))) for x in self.inputs)
        per_input: list[list[Tensor]] = [[] for _ in self.inputs]
        with self._grad_mode():
            for k, j in items:
                g = self.generator(k, j)
                for i, x in enumerate(self.inputs):
                    if x.is_floating_point():
                        per_input[i].append(self.input_sampler.sample(x, 1, generator=g)[0])
                    else:
                        per_input[i].append(x)
            return tuple(torch.cat(parts) for parts in per_input)
