"""A pipeline run on several processes (``torchrun --nproc-per-node N -m wrapgrad run FILE``, or
:meth:`~wrapgrad_pipeline.runner.Pipeline.run` inside an initialised process group).

Steps that declare ``sharded = True`` (``explain`` and ``evaluate``) run on every rank and split
their work over the ranks in global batches (:mod:`wrapgrad.sharding`): the batches a single
process forms, whose draws are seeded from the pipeline seed and the batch's global index, so
maps and scores do not depend on the number of ranks. Every other step (data, models,
calibration, the report, plugins' steps) runs once, on rank 0 (inside
:func:`wrapgrad.distributed.alone`), and rank 0 then sends what it added to the context to
every rank. Rank 0 alone writes ``results.json``, ``report.md`` and the figures.

A sharded step writes each finished global batch to ``<out>/shards/<step>/batch-NNNNNN.pt``
(atomically), keyed by a fingerprint of the pipeline, its models' weights and the calibrated
levels; a rerun (with any number of ranks, or in one process) reads the shards that are there
and computes only the others. A single-process run writes no shards (unless a shard folder is
there already, from an interrupted distributed run).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wrapgrad.distributed import agree, alone, broadcast_object, world
from wrapgrad.sharding import ShardStore, Unit, fingerprint, global_batches
from wrapgrad_pipeline.context import RunContext

__all__ = ["SHARDS", "is_sharded", "on_main", "shard_store", "units"]

#: The folder of the shards inside the output directory.
SHARDS = "shards"
#: The context's attributes rank 0 sends to every rank after a step it ran alone.
_STATE = (
    "_data",
    "models",
    "levels",
    "variants",
    "scores",
    "scores_by_seed",
    "results",
    "shared",
    "written",
    "results_path",
    "report_path",
    "figure_paths",
)


def is_sharded(step: Any) -> bool:
    """Whether a step splits its own work over the ranks (its ``sharded`` attribute)."""
    return bool(getattr(step, "sharded", False))


def on_main(run: Callable[[], None], context: RunContext, what: str) -> None:
    """Run ``run()`` on rank 0 as a single process, then give every rank rank 0's context
    (what the step added); a failure there fails every rank, naming rank 0. In one process:
    ``run()``."""
    w = world()
    if not w.distributed:
        run()
        return
    failure = None
    if w.main:
        try:
            with alone():
                run()
        except Exception as exc:
            failure = exc
    agree(failure, what)
    state = broadcast_object(
        {k: getattr(context, k) for k in _STATE if k != "_data" or context.has("data")}
        if w.main
        else None
    )
    for key, value in state.items():
        setattr(context, key, value)


def units(context: RunContext, n: int) -> tuple[Unit, ...]:
    """The global batches of ``n`` evaluated samples (``[explain].batch_size`` at a time)."""
    return global_batches(n, context.tables["explain"].batch_size)


def shard_store(context: RunContext, step: str) -> ShardStore | None:
    """Where step ``step`` keeps its shards: under torchrun, or where an interrupted run left
    some; None for a plain single-process run (which writes none)."""
    safe = "".join(c if c.isalnum() or c in "_-" else "_" for c in step)
    folder = context.output(f"{SHARDS}/{safe}")
    if not world().distributed and not folder.is_dir():
        return None
    key = fingerprint(
        step,
        context.results.get("pipeline", {}).get("sha256"),
        context.smoke,
        context.seed,
        {label: fingerprint(entry.model) for label, entry in context.models.items()},
        context.levels,
    )
    return ShardStore(folder, key)
