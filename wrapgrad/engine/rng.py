"""Random numbers of one Monte-Carlo estimate: its generator, per-sample seeds, the global RNG.

One generator drives an estimate. It first draws a table of seeds, one per weight sample and one
per input sample (:func:`derive_seeds`, shape ``(K, 1 + N)``: row ``k`` holds weight sample
``k``'s seed, then the seeds of its input samples ``j = 0 .. N-1``; without weight noise the
engine runs one model with ``K · N`` input samples, table ``(1, 1 + K·N)``); every draw of a
sample comes from a generator seeded from its entry (:func:`sub_generator`), so a sample's noise
does not depend on how samples are chunked or in which order they run.

Methods that draw random numbers themselves (GradientShap, Lime, KernelShap,
ShapleyValueSampling, FeaturePermutation, ...) and dropout in training mode use the global RNGs
(torch's, NumPy's, Python's), and draw for all the rows of a call at once: GradientShap takes
``R · n_samples`` baseline indices and interpolation points from NumPy and its NoiseTunnel noise
from torch for a call of ``R`` rows, so a row's draws depend on the other rows in its call and on
every call before it. Seeding the global RNG once per estimate therefore made their maps depend
on the chunk plan (``max_batch``, ``strategy``). Instead, such a run draws a second table, one
global seed per sample (:func:`derive_seeds` again, shape ``(K, N)``, after the first table, so
the engine's own draws are unchanged), runs every sample in a call of its own, and seeds the
global RNGs from the sample's entry just before the call (:func:`seed_global_rng`, inside
:func:`global_rng_restored`, which gives the caller's states back afterwards). A sample's own
draws are then those of the method called on that sample alone, whichever strategy or chunk size
runs it. The global seed of a sample is a separate entry from its input-noise seed: the same
seed for both would make NoiseTunnel's noise inside GradientShap repeat the input noise.
:func:`seeded_global_rng` seeds the global RNGs once for a block (the engine's single call of a
method without noise).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from wrapgrad.checks import check_generator, check_seed
from wrapgrad.errors import WrapgradValueError

__all__ = [
    "changed_global_rngs",
    "cuda_devices",
    "derive_seeds",
    "global_rng_restored",
    "global_rng_states",
    "make_generator",
    "seed_global_rng",
    "seeded_global_rng",
    "sub_generator",
]


def make_generator(
    device: torch.device | str | None,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Generator:
    """The generator that drives every draw of one Monte-Carlo estimate.

    ``generator`` wins if given (it must live on ``device``); else a new generator on ``device``
    seeded with ``seed``; with neither, the seed is drawn from torch's global RNG, so
    ``torch.manual_seed`` makes results repeatable too.
    """
    device = torch.device(device if device is not None else "cpu")
    generator = check_generator(generator, seed)
    if generator is not None:
        if generator.device.type != device.type:
            raise WrapgradValueError(
                f"generator: expected a generator on the inputs' device {device}, got one on "
                f"{generator.device}"
            )
        return generator
    seed = check_seed(seed)
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    g = torch.Generator(device=device)
    g.manual_seed(int(seed) % 2**63)
    return g


def derive_seeds(generator: torch.Generator, shape: Sequence[int]) -> list[Any]:
    """A nested list of independent 62-bit seeds of ``shape``, drawn from ``generator``."""
    t = torch.randint(0, 2**62, tuple(shape), generator=generator, device=generator.device)
    return t.cpu().tolist()


def sub_generator(device: torch.device, seed: int) -> torch.Generator:
    """A fresh generator on ``device`` seeded with ``seed`` (one per Monte-Carlo sample)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def cuda_devices(device: Any) -> list[torch.device]:
    """The CUDA generators whose states the global-RNG helpers seed and give back: every
    initialised CUDA device's (``torch.manual_seed``, which a method or Quantus may call, seeds
    them all), and ``device``'s if it is a CUDA device (its index resolved)."""
    devices: list[torch.device] = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        devices = [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    if device is not None and torch.device(device).type == "cuda":
        d = torch.device(device)
        if d.index is None:
            d = torch.device("cuda", torch.cuda.current_device())
        if d not in devices:
            devices.append(d)
    return devices


def seed_global_rng(seed: int, device: Any) -> None:
    """Seed the global RNGs with ``seed``: torch's CPU generator and the CUDA ones
    (:func:`cuda_devices`; torch takes ``seed mod 2**63``), NumPy's (``seed mod 2**32``) and
    Python's. Only inside :func:`global_rng_restored`."""
    seed = int(seed)
    torch.default_generator.manual_seed(seed % 2**63)
    for d in cuda_devices(device):
        torch.cuda.default_generators[d.index].manual_seed(seed % 2**63)
    np.random.seed(seed % 2**32)  # GradientShap draws baselines and steps with NumPy
    random.seed(seed)


def global_rng_states() -> tuple[torch.Tensor, tuple[Any, ...], Any]:
    """The global random states: torch's CPU generator, NumPy's and Python's."""
    return torch.random.get_rng_state(), np.random.get_state(), random.getstate()


def changed_global_rngs(before: tuple[torch.Tensor, tuple[Any, ...], Any]) -> list[str]:
    """Which global random states differ now from ``before`` (:func:`global_rng_states`):
    a list of ``"torch's"``, ``"NumPy's"``, ``"Python's"``, empty when none moved."""
    now = global_rng_states()
    a, b = before[1], now[1]
    same = (
        ("torch's", torch.equal(before[0], now[0])),
        ("NumPy's", a[0] == b[0] and bool(np.array_equal(a[1], b[1])) and a[2:] == b[2:]),
        ("Python's", before[2] == now[2]),
    )
    return [name for name, unchanged in same if not unchanged]


@contextlib.contextmanager
def global_rng_restored(device: Any, enabled: bool = True) -> Iterator[None]:
    """Run the block and give the caller's global RNG states back afterwards (torch's CPU and
    CUDA ones, :func:`cuda_devices`; NumPy's, Python's), whether it returned or raised.
    ``enabled=False``: a no-op."""
    if not enabled:
        yield
        return
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=cuda_devices(device)):
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


@contextlib.contextmanager
def seeded_global_rng(
    generator: torch.Generator, device: torch.device, enabled: bool
) -> Iterator[None]:
    """Run the block with the global RNGs seeded once from ``generator`` (one seed drawn from
    it), and restore the caller's RNG states afterwards.

    For a single call of a method that draws itself; a Monte-Carlo run seeds them per sample
    instead (see the module's docstring). ``enabled=False``: a no-op (nothing drawn).
    """
    if not enabled:
        yield
        return
    seed = int(derive_seeds(generator, (1,))[0])
    with global_rng_restored(device):
        seed_global_rng(seed, device)
        yield
