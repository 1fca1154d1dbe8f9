"""The global random states around the bridge's calls: seeded for the call, the caller's given back.

Quantus draws its perturbations from NumPy's global RNG and some of its metrics reseed torch's
(the model randomisation tests call ``torch.manual_seed``); wrapgrad's engine draws the seed of an
estimate without ``seed`` from torch's global RNG, and Captum's stochastic methods (Lime,
KernelShap, ...) draw from torch's, NumPy's (through scikit-learn) and Python's. Every call of the
bridge (:class:`~wrapgrad_quantus.QuantusMetric`, :func:`~wrapgrad_quantus.quantus_explain`, the
``explain_func`` of :func:`~wrapgrad_quantus.explain_func_from`) therefore runs inside
:func:`isolated`: the global RNGs are seeded for the call and the caller's states are restored
afterwards, so a call never changes the caller's random state, with or without a seed.

Without a seed a call draws its seed from :func:`fresh_seed`, never from a global RNG: inside a
metric call, from the metric's private stream of seeds (seeded from the metric's ``seed``, so a
seeded metric repeats every explanation it asks for, each call of its ``explain_func`` with a
seed of its own); outside one, from the operating system's entropy (fresh randomness each call).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import numpy as np

from wrapgrad.engine.rng import global_rng_restored, seed_global_rng

__all__ = ["fresh_seed", "isolated"]

#: The stream of seeds of the bridge call running in this context (None outside one).
_STREAM: ContextVar[np.random.Generator | None] = ContextVar("wrapgrad_quantus_seeds", default=None)


def fresh_seed() -> int:
    """A 63-bit seed for a call without one: the next of the enclosing :func:`isolated` block's
    stream, else fresh entropy from the operating system. No global RNG is drawn from."""
    stream = _STREAM.get()
    if stream is None:
        return int(np.random.SeedSequence().generate_state(1, np.uint64)[0]) >> 1
    return int(stream.integers(0, 2**63 - 1))


@contextlib.contextmanager
def isolated(seed: int | None = None, device: Any = None) -> Iterator[int]:
    """Run the block with NumPy's, Python's and torch's global RNGs (the CPU generator and the
    CUDA ones, ``device``'s included) seeded from ``seed`` (:func:`fresh_seed` when None), and
    the caller's states restored afterwards, whether the block returned or raised. Inside, calls
    without a seed draw theirs from a stream seeded from the same seed. Yields the seed used."""
    seed = fresh_seed() if seed is None else int(seed)
    token = _STREAM.set(np.random.default_rng((seed % 2**63, 1)))  # not the global streams
    try:
        with global_rng_restored(device):
            seed_global_rng(seed, device)
            yield seed
    finally:
        _STREAM.reset(token)
