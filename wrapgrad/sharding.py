"""Sharded work over the ranks of a ``torch.distributed`` run, in units that do not depend on
the number of ranks.

Explaining and scoring a data set is embarrassingly parallel over samples. The unit of work is
a *global batch* (:class:`Unit`): samples ``start:stop`` of the evaluated set, cut exactly as a
single process cuts it (``batch_size`` at a time, the last one shorter). A unit's random draws
are seeded from the run's seed and the unit's global index (:meth:`Unit.seed`), never from a
stream that runs across batches, so a unit gives the same numbers on whichever rank computes
it and for every number of ranks.

:func:`run_sharded` gives rank ``r`` of ``W`` the units ``r, r + W, r + 2W, ...`` (round robin:
the shares differ by at most one unit, and the short last unit falls to one rank), writes each
finished unit's result as its own shard file (:class:`ShardStore`, atomically), and returns
every unit's result, in global order, on every rank. A rerun reads the shards that are there
(with any number of ranks) and computes only the missing units. A rank whose work raises makes
every rank raise :class:`~wrapgrad.distributed.RankFailedError` naming it; a rank that dies is
named by rank 0's monitored barrier.

>>> [(u.index, u.start, u.stop) for u in global_batches(5, 2)]
[(0, 0, 2), (1, 2, 4), (2, 4, 5)]
>>> run_sharded(global_batches(5, 2), lambda u: u.stop - u.start, what="count")
[2, 2, 1]
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import torch

from wrapgrad.checks import check_positive_int
from wrapgrad.distributed import World, agree, barrier, derived_seed, gather_objects, world
from wrapgrad.errors import WrapgradTypeError
from wrapgrad.files import atomic_write

__all__ = [
    "SHARD_FORMAT",
    "ShardStore",
    "Unit",
    "fingerprint",
    "global_batches",
    "intra_op_threads",
    "run_sharded",
    "threads_per_worker",
]

#: The ``format`` field of a shard file.
SHARD_FORMAT = "wrapgrad-shard/1"


@attrs.frozen
class Unit:
    """A global batch: samples ``start:stop`` of the evaluated set, the ``index``-th batch."""

    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    def take(self, limit: int) -> slice:
        """The positions of this unit's samples among the first ``limit`` samples, relative
        to ``start`` (an empty slice when the unit lies beyond ``limit``).

        >>> Unit(1, 4, 8).take(6)
        slice(0, 2, None)
        """
        return slice(0, max(0, min(self.stop, limit) - self.start))

    def seed(self, seed: int, *keys: Any) -> int:
        """The seed of this unit's draws, in ``[0, 2**31)`` (a seed for torch, NumPy and Quantus
        alike): derived from ``seed``, ``keys`` and the unit's global index
        (:func:`wrapgrad.distributed.derived_seed`), so the same on every rank."""
        return derived_seed(seed, *keys, "batch", self.index) % 2**31


def global_batches(n: int, batch_size: int) -> tuple[Unit, ...]:
    """The global batches of ``n`` samples, ``batch_size`` at a time (the last one shorter)."""
    check_positive_int(n, "n", minimum=0)
    check_positive_int(batch_size, "batch_size")
    return tuple(
        Unit(i, start, min(start + batch_size, n))
        for i, start in enumerate(range(0, n, batch_size))
    )


def rank_units(units: Sequence[Unit], w: World) -> tuple[Unit, ...]:
    """The units rank ``w.rank`` of ``w.size`` computes: every ``w.size``-th from its rank."""
    return tuple(units[w.rank :: w.size])


def fingerprint(*parts: Any) -> str:
    """A short SHA-256 of ``parts`` (JSON-able values and tensors): what a shard must have been
    computed for to be reused (the pipeline's text, its models' weights, ...)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            t = part.detach().cpu().contiguous()
            h.update(f"{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(part, torch.nn.Module):
            for name, value in part.state_dict().items():
                h.update(name.encode())
                h.update(fingerprint(value).encode())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


@attrs.frozen
class ShardStore:
    """Shard files in ``folder``, one per unit (``<name>.pt``), each holding its payload and the
    ``key`` (a :func:`fingerprint`) of the work it belongs to. A file of another key, or one that
    cannot be read, counts as missing (and is overwritten when the unit is computed again)."""

    folder: Path = attrs.field(converter=Path)
    key: str

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.pt"

    def read(self, name: str) -> Any | None:
        """The payload of shard ``name``, or None where there is no usable one."""
        path = self.path(name)
        if not path.is_file():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            return None
        if not isinstance(blob, dict) or blob.get("format") != SHARD_FORMAT:
            return None
        return blob["payload"] if blob.get("key") == self.key else None

    def write(self, name: str, payload: Any) -> Path:
        """Write shard ``name`` atomically (readers see the whole file or none)."""
        blob = {"format": SHARD_FORMAT, "key": self.key, "payload": payload}
        return atomic_write(self.path(name), lambda tmp: torch.save(blob, tmp))

    def names(self) -> list[str]:
        """The names of the shard files there (usable or not)."""
        return sorted(p.stem for p in self.folder.glob("*.pt")) if self.folder.is_dir() else []


def _shard_name(unit: Unit) -> str:
    return f"batch-{unit.index:06d}"


@contextlib.contextmanager
def intra_op_threads(n: int) -> Iterator[int]:
    """Inside: torch's intra-op thread count set to ``n``, the caller's restored on exit,
    whether the block returned or raised; yields ``n``."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def threads_per_worker(workers: int) -> contextlib.AbstractContextManager[int]:
    """Inside: torch's intra-op thread count divided among ``workers`` threads (at least one
    each), restored on exit; yields the count each worker gets."""
    return intra_op_threads(max(1, torch.get_num_threads() // workers))


def _computed(
    units: Sequence[Unit], work: Callable[[Unit], Any], store: ShardStore | None, workers: int
) -> Iterator[Any]:
    """The units' payloads in order: read from ``store`` or computed, by ``workers`` threads
    (each computed shard written as soon as it is done)."""

    def one(unit: Unit) -> Any:
        name = _shard_name(unit)
        payload = None if store is None else store.read(name)
        if payload is None:
            payload = work(unit)
            if store is not None:
                store.write(name, payload)
        return payload

    if workers == 1:
        for unit in units:
            yield one(unit)
        return
    # catch_warnings: the workers' own catch_warnings blocks (wrap() silences some of Captum's
    # notices) save and restore the one global filter list in any interleaving; it is put back
    # as it was once they are done. Each task runs in a copy of the caller's context, so
    # context variables (the current registry of use_registry) hold in the workers too.
    with (
        warnings.catch_warnings(),
        threads_per_worker(workers),
        ThreadPoolExecutor(workers) as pool,
    ):
        futures = [pool.submit(contextvars.copy_context().run, one, unit) for unit in units]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def run_sharded(
    units: Sequence[Unit],
    work: Callable[[Unit], Any],
    *,
    what: str,
    store: ShardStore | None = None,
    workers: int = 1,
) -> list[Any]:
    """Every unit's ``work(unit)``, in the order of ``units``, on every rank; each rank computes
    its share (:func:`rank_units`), reading a unit's shard from ``store`` where one is there
    and writing it when computed.

    Collective under ``torch.distributed`` (every rank calls it with the same units): after its
    share, each rank meets the others at a monitored barrier (a rank that died or hung past the
    timeout is named on rank 0), then :func:`~wrapgrad.distributed.agree` fails every rank if
    one raised, naming it, and the results are gathered. Shards written before a failure stay.
    In a single process it is the plain loop (errors propagate unchanged).

    ``workers > 1``: a rank computes its units on that many threads, torch's intra-op threads
    divided among them (:func:`threads_per_worker`; also for a share of one unit, so that the
    thread count does not depend on the share). ``work`` runs in a copy of the caller's
    context (context variables such as the current registry hold) and must be safe to call from
    several threads at once: no shared module evaluated with other weights
    (``functional_call`` swaps a module's tensors while it runs), no draws from the global RNGs.
    The results are those of one thread with the workers' thread count; the first unit (in
    order) that raises is the error; units already running then are finished first.
    """
    if not callable(work):
        raise WrapgradTypeError(f"work: expected a callable (unit), got {type(work).__name__}")
    workers = check_positive_int(workers, "workers")
    w = world()
    barrier(f"{what}: start")  # every rank there, and the control group made, before any work
    done: dict[int, Any] = {}
    failure: BaseException | None = None
    current: Unit | None = None
    share = rank_units(units, w)
    payloads = _computed(share, work, store, workers)
    try:
        for current in share:
            done[current.index] = next(payloads)
    except Exception as exc:
        if not w.distributed:
            raise
        failure = exc
    finally:
        payloads.close()
    where = what if failure is None or current is None else f"{what} (batch {current.index})"
    barrier(what)
    agree(failure, where)
    merged: dict[int, Any] = {}
    for part in gather_objects(done):
        merged.update(part)
    return [merged[u.index] for u in units]
