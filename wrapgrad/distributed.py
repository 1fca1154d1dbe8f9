"""Running on several processes with ``torch.distributed``: world info, process groups, timeouts,
and failures that reach every rank.

wrapgrad scales out on the engine its users already have: ``torchrun`` starts the processes and
``torch.distributed`` connects them (gloo on CPUs, NCCL on GPUs). This module holds the little
that the training loop and the pipeline need on top:

* :func:`world` -- this process's rank and the number of processes (rank 0 of 1 without an
  initialised process group, so single-process code paths need no special case);
* :func:`init_process_group` / :func:`process_group` -- initialise from torchrun's environment
  (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) with a bounded
  timeout (:func:`timeout`, ``WRAPGRAD_DIST_TIMEOUT`` seconds, default 600), the backend chosen
  by :func:`default_backend`;
* :func:`agree` -- the failure rule: every rank reports whether its part raised, and if one did,
  **every** rank raises :class:`RankFailedError` naming the failing rank(s) and the error, instead
  of the others waiting forever in the next collective;
* :func:`barrier` (a ``monitored_barrier``: a rank that does not arrive within the timeout is
  named), :func:`broadcast_object`, :func:`any_rank`, :func:`sum_over_ranks` -- small collectives
  on a gloo *control group* of CPU tensors, created once beside the default group (so the same
  calls work when the default group is NCCL);
* :func:`derived_seed` -- seeds derived from a base seed and keys (an epoch, a rank, a batch's
  global index), the same on every rank and for every number of ranks;
* :func:`alone` -- a context in which this process behaves as a single process (``world()`` is
  rank 0 of 1, ``wrapgrad.train`` does not use DDP): for work every rank repeats, or that rank 0
  does while the others wait.

A rank that *dies* (killed, out of memory) cannot report: its peers' next collective fails (gloo
sees the connection close) or times out, and ``torchrun`` stops the other workers and names the
failed rank and its exit code.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import torch

from wrapgrad.errors import WrapgradError, WrapgradValueError

__all__ = [
    "TIMEOUT_ENV",
    "RankFailedError",
    "World",
    "agree",
    "alone",
    "any_rank",
    "barrier",
    "broadcast_object",
    "default_backend",
    "derived_seed",
    "gather_objects",
    "init_process_group",
    "launched",
    "process_group",
    "sum_over_ranks",
    "timeout",
    "world",
]

#: Environment variable: the timeout of collectives, in seconds (default 600).
TIMEOUT_ENV = "WRAPGRAD_DIST_TIMEOUT"
_DEFAULT_TIMEOUT = 600.0


class RankFailedError(WrapgradError, RuntimeError):
    """A rank of a distributed run failed; raised on every rank.

    Attributes:
        ranks: the ranks that failed (sorted).
        errors: ``rank -> "ErrorType: message"`` for each.
    """

    def __init__(self, message: str, ranks: Sequence[int] = (), errors: Any = None) -> None:
        super().__init__(message)
        self.ranks = tuple(ranks)
        self.errors = dict(errors or {})


@attrs.frozen
class World:
    """Where this process stands in a run: ``rank`` of ``size`` processes (``local_rank`` on its
    node), and the default group's ``backend`` (None without a process group)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0


def _initialised() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized()


_ALONE: contextvars.ContextVar[bool] = contextvars.ContextVar("wrapgrad_alone", default=False)


def world() -> World:
    """This process's :class:`World`: from the initialised default process group, else (or
    inside :func:`alone`) rank 0 of 1.

    >>> world()
    World(rank=0, size=1, local_rank=0, backend=None)
    """
    if not _initialised() or _ALONE.get():
        return World()
    dist = torch.distributed
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return World(dist.get_rank(), dist.get_world_size(), local, str(dist.get_backend()))


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher that sets
    ``WORLD_SIZE`` and ``RANK``) for a run of more than one process."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ
    except ValueError:
        return False


def timeout(seconds: float | None = None) -> datetime.timedelta:
    """The timeout of collectives: ``seconds``, else ``WRAPGRAD_DIST_TIMEOUT``, else 600 s.

    >>> timeout(30)
    datetime.timedelta(seconds=30)
    """
    if seconds is None:
        raw = os.environ.get(TIMEOUT_ENV)
        try:
            seconds = _DEFAULT_TIMEOUT if raw is None else float(raw)
        except ValueError:
            raise WrapgradValueError(
                f"{TIMEOUT_ENV}: expected a number of seconds, got {raw!r}"
            ) from None
    if not seconds > 0:
        raise WrapgradValueError(f"timeout: expected a positive number of seconds, got {seconds}")
    return datetime.timedelta(seconds=seconds)


def default_backend(device: Any = None) -> str:
    """``"nccl"`` where CUDA (and NCCL) is available and ``device`` is not a CPU, else
    ``"gloo"``."""
    if device is not None and torch.device(device).type != "cuda":
        return "gloo"
    dist = torch.distributed
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "nccl"
    return "gloo"


def init_process_group(
    backend: str | None = None,
    *,
    timeout_s: float | None = None,
    init_method: str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> World:
    """Initialise the default process group (a no-op when one is initialised) and return the
    :class:`World`.

    Without ``init_method``, ``rank`` and ``world_size`` it reads torchrun's environment
    (``env://``). With NCCL, the process's CUDA device becomes ``cuda:LOCAL_RANK``.
    """
    if _initialised():
        return world()
    backend = backend or default_backend()
    kwargs: dict[str, Any] = {"backend": backend, "timeout": timeout(timeout_s)}
    if init_method is not None:
        kwargs["init_method"] = init_method
    if rank is not None:
        kwargs["rank"] = rank
    if world_size is not None:
        kwargs["world_size"] = world_size
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank or 0)))
    torch.distributed.init_process_group(**kwargs)
    _control()  # made now, while every rank is here (a rank that dies later cannot block it)
    return world()


@contextlib.contextmanager
def process_group(backend: str | None = None, *, timeout_s: float | None = None) -> Iterator[World]:
    """Inside: the process group of a torchrun-launched process (initialised here and destroyed
    on exit when this call initialised it), or rank 0 of 1 for a plain process."""
    mine = launched() and not _initialised()
    if mine:
        init_process_group(backend, timeout_s=timeout_s)
    try:
        yield world()
    finally:
        if mine and _initialised():
            _CONTROL.clear()
            torch.distributed.destroy_process_group()


@contextlib.contextmanager
def alone() -> Iterator[World]:
    """Inside, this process is rank 0 of 1 for wrapgrad (:func:`world`, the training loop, the
    helpers below); the process group itself is untouched."""
    token = _ALONE.set(True)
    try:
        yield World()
    finally:
        _ALONE.reset(token)


# -- the control group ------------------------------------------------------------------------------
_CONTROL: dict[int, Any] = {}


def _control() -> Any:
    """A gloo group over every rank for control messages (CPU tensors), created on first use by
    every rank (each helper here is a collective, so every rank gets here in the same order)."""
    dist = torch.distributed
    key = id(dist.group.WORLD)
    if key not in _CONTROL:
        _CONTROL.clear()
        _CONTROL[key] = dist.new_group(backend="gloo", timeout=timeout())
    return _CONTROL[key]


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def agree(error: BaseException | None, what: str) -> None:
    """Collective: every rank calls this with the exception its part raised (or None); if any
    rank had one, every rank raises :class:`RankFailedError` naming the rank(s) and their
    errors (on a failing rank, chained to its own exception). A no-op in a single process
    (``error`` is re-raised there)."""
    w = world()
    if not w.distributed:
        if error is not None:
            raise error
        return
    dist = torch.distributed
    try:
        group = _control()
        flag = torch.tensor([0 if error is None else 1], dtype=torch.int64)
        dist.all_reduce(flag, group=group)
        if int(flag) == 0:
            return
        gathered: list[Any] = [None] * w.size
        dist.all_gather_object(gathered, None if error is None else _describe(error), group=group)
    except RuntimeError as exc:  # a peer is gone: its connection closed, or the timeout passed
        raise RankFailedError(
            f"{what}: a rank stopped answering (seen on rank {w.rank}: {_describe(exc)})"
        ) from (error or exc)
    errors = {r: e for r, e in enumerate(gathered) if e is not None}
    shown = "; ".join(f"rank {r} of {w.size} failed: {e}" for r, e in errors.items())
    message = f"{what}: {shown}"
    if error is None:
        message += f" (this is rank {w.rank}, stopped because of it)"
    raise RankFailedError(message, sorted(errors), errors) from error


_BARRIERS = [0]


def _store() -> Any:
    """The default group's key-value store (torchrun's, or the rendezvous file), or None."""
    try:
        return torch.distributed.distributed_c10d._get_default_store()
    except Exception:  # pragma: no cover - a backend without one
        return None


def barrier(what: str, timeout_s: float | None = None) -> None:
    """Wait for every rank (a gloo ``monitored_barrier``): a rank that does not arrive within the
    timeout, or whose process is gone, is named in the :class:`RankFailedError` raised on rank 0
    (the others see their collective fail or time out, also as :class:`RankFailedError`).

    Each rank also notes its arrival in the process group's store, so that where gloo only
    reports a closed connection, the ranks that never arrived are still named."""
    w = world()
    if not w.distributed:
        return
    _BARRIERS[0] += 1
    key = f"wrapgrad/barrier/{_BARRIERS[0]}/"
    store = _store()
    if store is not None:
        store.set(key + str(w.rank), "1")
    try:
        torch.distributed.monitored_barrier(
            group=_control(), timeout=timeout(timeout_s), wait_all_ranks=True
        )
    except RuntimeError as exc:
        found = re.search(r"Ranks? ([\d, ]+) failed to pass monitoredBarrier", str(exc))
        ranks = sorted({int(r) for r in found.group(1).split(",")}) if found else []
        if not ranks and store is not None:
            ranks = [r for r in range(w.size) if not _has(store, key + str(r))]
        if ranks:
            names = ", ".join(str(r) for r in ranks)
            message = (
                f"{what}: rank {names} of {w.size} stopped (its process died, or hung past the "
                f"{timeout(timeout_s).total_seconds():g} s timeout)"
            )
        else:
            message = f"{what}: a rank stopped answering (seen on rank {w.rank}: {_describe(exc)})"
        raise RankFailedError(message, ranks) from exc


def _has(store: Any, key: str) -> bool:
    try:
        return bool(store.check([key]))
    except Exception:  # pragma: no cover - the store is gone too
        return True


def gather_objects(obj: Any) -> list[Any]:
    """Collective: every rank's ``obj`` (pickled through the control group), in rank order."""
    w = world()
    if not w.distributed:
        return [obj]
    out: list[Any] = [None] * w.size
    torch.distributed.all_gather_object(out, obj, group=_control())
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled through the control group)."""
    if not world().distributed:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src, group=_control())
    return box[0]


def any_rank(flag: bool) -> bool:
    """Collective: whether ``flag`` is true on any rank."""
    if not world().distributed:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX, group=_control())
    return bool(int(t))


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """Collective: the elementwise sum of ``values`` over ranks, as float64 on the CPU (for
    counts and metric sums; gradients are DistributedDataParallel's business)."""
    out = values.detach().to("cpu", torch.float64).clone()
    if world().distributed:
        torch.distributed.all_reduce(out, group=_control())
    return out


def derived_seed(seed: int, *keys: Any) -> int:
    """A seed in ``[0, 2**63)`` derived from ``seed`` and ``keys`` by SHA-256: the same in every
    process, different for different keys (``derived_seed(seed, "objective", epoch, rank)``,
    ``derived_seed(seed, "batch", index)``).

    >>> derived_seed(0, "batch", 3) == derived_seed(0, "batch", 3) != derived_seed(0, "batch", 4)
    True
    """
    blob = "/".join(str(k) for k in (seed, *keys)).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") & (2**63 - 1)
