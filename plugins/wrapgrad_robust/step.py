"""The pipeline's ``train`` step: one model per objective x training seed (``[train]``).

Contributed through the ``wrapgrad_pipeline_steps`` hook exactly as the built-in steps are (this
plugin imports nothing of the pipeline plugin: the table is a plain attrs record, the step a
plain class). Each entry of ``[train].objectives`` is trained once per seed of ``[train].seeds``
with :func:`wrapgrad.train` (:mod:`wrapgrad_robust.jobs`); the models are labelled
``<label>@<seed>`` and carry ``group = <label>`` in their info, which the report aggregates over
the seeds. Settings come from the objective's preset (:mod:`wrapgrad_robust.presets`), then the
table's, then the entry's.

Example (``examples/robust_training_mnist.toml``)::

    [train]
    model = "small_cnn"
    seeds = [0, 1]
    objectives = [
        {label = "Nat", objective = "natural", epochs = 0},   # the recipe-trained model
        {label = "AAT", objective = "aat", limit = 2000, options = {lam = 2.0}},
    ]
"""

from __future__ import annotations

from collections.abc import Mapping
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any

import attrs

from wrapgrad.checks import check_choice, check_positive, check_positive_int, check_seed
from wrapgrad.errors import UnknownNameError, WrapgradError, WrapgradValueError
from wrapgrad.options import capped
from wrapgrad.sharding import intra_op_threads
from wrapgrad_robust.jobs import JobResult, TrainJob, base_model, run_job

__all__ = ["SMOKE", "ObjectiveEntry", "TrainStep", "TrainTable"]

#: What a ``--smoke`` run keeps: epochs, training items, seeds; the initial model's recipe
#: shrinks as the ``[model]`` step's does (one epoch on 256 items).
SMOKE: dict[str, Any] = {
    "epochs": 1,
    "train_items": 100,
    "seeds": 2,
    "recipe": {"epochs": 1, "dataset_options": {"limit": 256}},
}
INITS = ("pretrained", "scratch")
SCALES = ("embedded", "paper", "none")
#: The loop settings a file may set (at the table's level or per objective).
LOOP_FIELDS = ("epochs", "lr", "batch_size", "optimizer")
#: ``wrapgrad.train`` arguments the step itself sets.
_OWN = {"model", "data", "objective", "seed", "progress", "checkpoint_dir", "resume", "registry"}


def _doc(doc: str, **extra: str) -> dict[str, str]:
    return {"doc": doc, **extra}


def _optional(check: Any, **kwargs: Any) -> Any:
    def validate(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is not None:
            check(value, attribute.name, **kwargs)

    return validate


def _one_of(choices: tuple[str, ...], default: str, doc: str) -> Any:
    """A field whose value is one of ``choices`` (``check_choice``, naming the field)."""
    return attrs.field(
        default=default,
        validator=lambda i, a, v: check_choice(v, a.name, choices),
        metadata=_doc(doc),
    )


def _epochs(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None:
        check_positive_int(value, attribute.name, minimum=0)


#: The loop settings' documentation, type as the reference shows it, and validator.
_LOOP_DOCS: dict[str, tuple[str, str | None, Any]] = {
    "epochs": ("training epochs", "integer ≥ 0", _epochs),
    "lr": ("learning rate", None, _optional(check_positive)),
    "batch_size": ("batch size", "integer ≥ 1", _optional(check_positive_int)),
    "optimizer": ("`adam`, `adamw` or `sgd`", None, None),
    "limit": (
        "train on the first `limit` training items",
        "integer ≥ 1",
        _optional(check_positive_int),
    ),
}


def _loop_field(name: str, default: str, *, doc: str | None = None) -> Any:
    """The optional field of the loop setting ``name`` (in :data:`_LOOP_DOCS`), whose value left
    out is ``default`` (as the reference shows it); ``doc`` replaces its documentation."""
    text, type_, validator = _LOOP_DOCS[name]
    shown = {"default": default} if type_ is None else {"type": type_, "default": default}
    return attrs.field(default=None, validator=validator, metadata=_doc(doc or text, **shown))


def _seeds(instance: Any, attribute: attrs.Attribute, value: tuple[int, ...]) -> None:
    if not value:
        raise WrapgradValueError(f"{attribute.name}: expected at least one training seed, got none")
    for s in value:
        check_seed(s, attribute.name)
    if len(set(value)) != len(value):
        raise WrapgradValueError(f"{attribute.name}: expected distinct seeds, got {list(value)}")


def _entries(instance: Any, attribute: attrs.Attribute, value: tuple[Any, ...]) -> None:
    if not value:
        raise WrapgradValueError(f"{attribute.name}: expected at least one objective, got none")


@attrs.frozen(kw_only=True)
class ObjectiveEntry:
    """One objective, trained once per seed; its models are labelled `<label>@<seed>` and
    reported together under `label` (mean and intervals over the test samples and the seeds).
    Loop settings left out come from `[train]`, then from the objective's preset."""

    label: str | None = attrs.field(
        default=None,
        metadata=_doc("the row in the report; distinct", default="the objective's name"),
    )
    objective: str = attrs.field(
        metadata=_doc(
            "a registered objective (`natural`, `pgd`, `ig_norm`, `ig_sum_norm`, `aat`, "
            "`adv_aat`, or a plugin's; `wrapgrad plugins --kind objective`)"
        )
    )
    options: Mapping[str, Any] = attrs.field(
        factory=dict,
        metadata=_doc(
            "the objective's options over its preset (`lam`, `beta`, `epsilon`, `steps`, "
            "`step_size`, `ig_steps`, `k`, ...; checked)"
        ),
    )
    epochs: int | None = _loop_field(
        "epochs",
        "`[train].epochs`",
        doc='training epochs; 0 with `init = "pretrained"`: the initial model itself, not '
        "trained further (FAR's natural model)",
    )
    lr: float | None = _loop_field("lr", "`[train].lr`")
    batch_size: int | None = _loop_field("batch_size", "`[train].batch_size`")
    optimizer: str | None = _loop_field("optimizer", "`[train].optimizer`")
    limit: int | None = _loop_field("limit", "`[train].limit`")


@attrs.frozen(kw_only=True)
class TrainTable:
    """Robust training (plugin `wrapgrad_robust`): every objective is trained once per seed
    with `wrapgrad.train` on the train part of a train/test split (the recipe's `data_seed` when
    fine-tuning, else `[data].split_seed`), which each model declares, so `[data]` evaluates on
    that split's test part; every model is then calibrated, explained, scored and reported,
    and the report aggregates each objective's seeds. Settings: the objective's preset (`preset`), then this table's, then the entry's.
    `--smoke` keeps 1 epoch on 100 items, two seeds, one worker, and the objectives' smoke caps
    (e.g. 2 inner steps); the initial model's recipe shrinks to 1 epoch on 256 items."""

    model: str = attrs.field(
        default="small_cnn", metadata=_doc("a registered model (the architecture)")
    )
    dataset: str | None = attrs.field(
        default=None,
        metadata=_doc(
            "the registered data set to train on (its `train` split)", default="`[data].dataset`"
        ),
    )
    objectives: tuple[ObjectiveEntry, ...] = attrs.field(
        validator=_entries, metadata=_doc("see below")
    )
    seeds: tuple[int, ...] = attrs.field(
        default=(0,),
        validator=_seeds,
        metadata=_doc(
            "training seeds: shuffling, random starts, and (with `base_seed` unset) the "
            "initial model's seed; the report's intervals count them as a source of randomness"
        ),
    )
    init: str = _one_of(
        INITS,
        "pretrained",
        '`"pretrained"`: fine-tune the recipe-trained model (FAR fine-tunes its natural '
        'model); `"scratch"`: a fresh model initialised from the seed',
    )
    base_seed: int | None = attrs.field(
        default=None,
        validator=_optional(check_seed),
        metadata=_doc(
            "the seed of the recipe-trained initial model for every training seed",
            default="each training seed its own",
        ),
    )
    recipe: Mapping[str, Any] = attrs.field(
        factory=dict,
        metadata=_doc("overrides of the initial model's recipe (as `[model].recipe`; checked)"),
    )
    preset: str = _one_of(
        SCALES,
        "embedded",
        '`"embedded"` (the embedded-data scale, docs/training.md), `"paper"` (FAR Tables '
        '2-3, Madry, RAR) or `"none"` (the objectives\' own defaults)',
    )
    epochs: int | None = _loop_field("epochs", "the preset's, else 1")
    lr: float | None = _loop_field("lr", "the preset's, else 1e-3")
    batch_size: int | None = _loop_field("batch_size", "the preset's, else 64")
    optimizer: str | None = _loop_field("optimizer", "the preset's, else adam")
    limit: int | None = _loop_field("limit", "all")
    workers: int = attrs.field(
        default=1,
        validator=lambda i, a, v: check_positive_int(v, a.name),
        metadata=_doc(
            "trainings run at once, each in its own process (results do not depend on it: "
            "every training runs with `threads` torch threads); progress then counts finished "
            "trainings",
            type="integer ≥ 1",
        ),
    )
    threads: int = attrs.field(
        default=1,
        validator=lambda i, a, v: check_positive_int(v, a.name),
        metadata=_doc(
            "torch threads of each training (one is fastest for small models on a small "
            "machine; docs/training.md)",
            type="integer ≥ 1",
        ),
    )
    checkpoints: bool = attrs.field(
        default=False,
        metadata=_doc(
            "write each training's checkpoint after every epoch to "
            "`train/<label>@<seed>/` in the output directory (atomically)"
        ),
    )
    resume: bool = attrs.field(
        default=False,
        metadata=_doc(
            "continue each training from its checkpoint there when it is of this very training "
            "(same data, initial model, objective, options, settings and seed; else it trains "
            "afresh)"
        ),
    )


# -- settings ------------------------------------------------------------------------------------
def _loop_names() -> set[str]:
    from wrapgrad.options import accepted
    from wrapgrad.training import train

    return set(accepted(train)[0]) - _OWN


def _preset(objective: str, scale: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(loop settings, objective options)`` of ``objective``'s preset at ``scale``."""
    from wrapgrad_robust.presets import preset

    settings = {} if scale == "none" else preset(objective, scale)
    loop = _loop_names()
    return (
        {k: v for k, v in settings.items() if k in loop},
        {k: v for k, v in settings.items() if k not in loop},
    )


def _settings(table: TrainTable, entry: ObjectiveEntry) -> tuple[dict[str, Any], dict, Any]:
    """``(loop settings, objective options, limit)`` of one entry (entry > table > preset)."""
    loop, options = _preset(entry.objective, table.preset)
    for key in LOOP_FIELDS:
        for source in (table, entry):
            if getattr(source, key) is not None:
                loop[key] = getattr(source, key)
    loop.setdefault("epochs", 1)
    options.update(entry.options)
    limit = entry.limit if entry.limit is not None else table.limit
    return loop, options, limit


def _label(entry: ObjectiveEntry, seed: int) -> str:
    return f"{entry.label}@{seed}"


def _folder(label: str) -> str:
    return "train/" + "".join(ch if ch.isalnum() or ch in "_-@." else "_" for ch in label)


def _split_seed(table: TrainTable, model: str, dataset: str, data: Any) -> tuple[int, str]:
    """``(seed, field)``: the train/test split the models train on: the recipe's ``data_seed``
    for fine-tuned models (the initial model trained on it too), ``[data].split_seed`` (else 0)
    for models from scratch."""
    from wrapgrad.catalog import recipe

    if table.init == "pretrained":
        seed = recipe(model, dataset, **dict(table.recipe)).data_seed
        return int(seed), "[train].recipe.data_seed"
    seed = getattr(data, "split_seed", None)
    return (0 if seed is None else int(seed)), "[data].split_seed"


class TrainStep:
    """Trains every objective x seed of ``[train]`` (module docstring)."""

    # -- check -------------------------------------------------------------------------------
    def check(self, table: TrainTable, plan: Any) -> TrainTable:

        spec = plan.component("model", table.model, "[train].model")
        data = plan.tables["data"]
        dataset = plan.component("dataset", table.dataset or data.dataset, "[train].dataset").name
        if table.init == "pretrained":
            if spec.pretrained is None:
                raise plan.fail(
                    "[train].init",
                    f'the model {spec.name!r} has no training recipe to fine-tune; use "scratch"',
                )
            plan.recipe(spec.name, dataset, table.recipe, "[train].recipe")
        elif table.recipe:
            raise plan.fail("[train].recipe", 'expected no recipe with init = "scratch"')
        split_seed, split_field = _split_seed(table, spec.name, dataset, data)
        same_data = dataset == data.dataset
        if same_data and data.split != "test":
            raise plan.fail(
                "[data].split",
                f"the models train on the train part of {dataset!r}'s split (seed "
                f'{split_seed}); evaluating on [data].split = "{data.split}" would score them '
                f'on training items: expected "test"',
            )
        entries = []
        for i, entry in enumerate(table.objectives):
            entries.append(self._check_entry(table, entry, plan, i))
        labels = [str(e.label) for e in entries]
        if len(set(labels)) != len(labels):
            raise plan.fail("[train].objectives", f"expected distinct labels, got {labels!r}")
        for i, entry in enumerate(entries):
            for seed in table.seeds:
                field = f"[train].objectives[{i}].label"
                plan.add_model(
                    _label(entry, seed),
                    field,
                    group=str(entry.label),
                    split_seed=split_seed if same_data else None,
                    split_field=split_field,
                )
        return attrs.evolve(table, model=spec.name, dataset=dataset, objectives=tuple(entries))

    @staticmethod
    def _check_entry(table: TrainTable, entry: ObjectiveEntry, plan: Any, i: int) -> ObjectiveEntry:
        where = f"[train].objectives[{i}]"
        spec = plan.component("objective", entry.objective, f"{where}.objective")
        entry = attrs.evolve(entry, objective=spec.name, label=entry.label or spec.name)
        if "@" in str(entry.label) or "/" in str(entry.label):
            raise plan.fail(
                f"{where}.label", f"expected a label without '@' or '/', got {entry.label!r}"
            )
        loop_names = _loop_names()
        for key in entry.options:
            if key in loop_names:
                raise plan.fail(
                    f"{where}.options.{key}",
                    f"{key!r} is a loop setting: expected it as {where}.{key} or [train].{key}"
                    if key in LOOP_FIELDS
                    else f"{key!r} is a loop setting the step does not take from a file",
                )
        plan.check_options(spec, entry.options, f"{where}.options")
        loop, options, _ = _settings(table, entry)
        if loop["epochs"] == 0 and table.init != "pretrained":
            raise plan.fail(
                f"{where}.epochs",
                'expected at least 1 with init = "scratch" (0 keeps the initial model, which '
                "would be untrained)",
            )
        if loop.get("optimizer") is not None:
            from wrapgrad.training.records import OPTIMIZERS

            field = f"{where}.optimizer" if entry.optimizer is not None else "[train].optimizer"
            try:
                check_choice(str(loop["optimizer"]).lower(), field, OPTIMIZERS)
            except WrapgradError as exc:
                raise plan.fail(field, str(exc).split(": ", 1)[-1]) from None
        try:
            spec.factory(**options)  # the objective refuses bad values (epsilon <= 0, ...)
        except UnknownNameError as exc:
            raise plan.unknown(
                f"{where}.options.{exc.name}", exc.name, exc.known, "option"
            ) from None
        except (WrapgradError, ValueError, TypeError) as exc:
            raise plan.fail(f"{where}.options", str(exc)) from None
        return entry

    # -- smoke -------------------------------------------------------------------------------
    def shrink(self, table: TrainTable) -> TrainTable:
        from wrapgrad.registry import get_registry

        entries = []
        for entry in table.objectives:
            loop, _, limit = _settings(table, entry)
            caps = get_registry().get("objective", entry.objective).smoke_caps()
            entries.append(
                attrs.evolve(
                    entry,
                    epochs=min(int(loop["epochs"]), SMOKE["epochs"]),
                    limit=min(limit or SMOKE["train_items"], SMOKE["train_items"]),
                    options=capped(entry.options, caps),
                )
            )
        recipe = {**dict(table.recipe), **SMOKE["recipe"]}
        return attrs.evolve(
            table,
            objectives=tuple(entries),
            seeds=table.seeds[: SMOKE["seeds"]],
            recipe=recipe if table.init == "pretrained" else {},
            workers=1,
        )

    def outputs(self, table: TrainTable) -> tuple[str, ...]:
        return ("train",) if table.checkpoints else ()

    # -- run ---------------------------------------------------------------------------------
    def jobs(self, table: TrainTable, split_seed: int, out_dir: Any = None) -> list[TrainJob]:
        """The trainings of ``table``, in report order (objective, then seed)."""
        jobs = []
        for entry in table.objectives:
            loop, options, limit = _settings(table, entry)
            for seed in table.seeds:
                label = _label(entry, seed)
                folder = None
                if table.checkpoints and out_dir is not None:
                    folder = str(out_dir / _folder(label))
                jobs.append(
                    TrainJob(
                        label=label,
                        group=str(entry.label),
                        objective=entry.objective,
                        options=options,
                        loop=loop,
                        seed=seed,
                        model=table.model,
                        dataset=str(table.dataset),
                        split_seed=split_seed,
                        limit=limit,
                        init=table.init,
                        base_seed=seed if table.base_seed is None else table.base_seed,
                        recipe=dict(table.recipe),
                        threads=table.threads,
                        checkpoint_dir=folder,
                        resume=table.resume,
                    )
                )
        return jobs

    def run(self, table: TrainTable, context: Any) -> None:
        split_seed, _ = _split_seed(table, table.model, str(table.dataset), context.tables["data"])
        out_dir = context.output(".") if table.checkpoints else None
        jobs = self.jobs(table, split_seed, out_dir)
        done = _run_jobs(jobs, table.workers, context.progress)
        for job in jobs:
            result = done[job.label]
            model = base_model(job)
            model.load_state_dict(result.state)
            context.add_model(job.label, model.eval(), result.info)
        context.results.setdefault("seeds", {})["train"] = list(table.seeds)
        context.results["training"] = {
            "seeds": list(table.seeds),
            "init": table.init,
            "workers": table.workers,
            "threads": table.threads,
            "seconds": {j.label: done[j.label].info["train_seconds"] for j in jobs},
        }


def _run_jobs(jobs: list[TrainJob], workers: int, progress: bool) -> dict[str, JobResult]:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc="train", disable=not progress, leave=False)
    try:
        if workers == 1 or len(jobs) == 1:
            out = {}
            for job in jobs:
                bar.set_postfix_str(job.label, refresh=False)
                out[job.label] = run_job(job, progress)
                bar.update(1)
            return out
        return _pool(jobs, workers, bar)
    finally:
        bar.close()


def _pool(jobs: list[TrainJob], workers: int, bar: Any) -> dict[str, JobResult]:
    """Run ``jobs`` in ``workers`` spawned processes: first the initial models (so that no two
    processes train the same one), then the trainings.

    No worker outlives the call: when it ends by an exception (a job's, ``KeyboardInterrupt``,
    the :class:`wrapgrad.cli.Terminated` of the command line's SIGTERM handler) the workers are
    terminated before the exception propagates (``shutdown`` alone would wait for the running
    trainings), and a worker whose parent process is gone (killed, or ended by a signal it does
    not handle) exits on its own within about :data:`WATCH_SECONDS` (:func:`_worker_init`). No
    signal handler is installed here."""
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    bases = {(j.model, j.dataset, j.base_seed, repr(sorted(j.recipe.items()))): j for j in jobs}
    bases = {k: j for k, j in bases.items() if j.init == "pretrained"}
    context = _RecordingContext()
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_worker_init,
        initargs=(os.getpid(),),
    )
    try:
        for future in as_completed([pool.submit(_in_worker, _ensure, j) for j in bases.values()]):
            future.result()
        futures = {pool.submit(_in_worker, run_job, j, False): j for j in jobs}
        out = {}
        for future in as_completed(futures):
            result = future.result()
            out[result.label] = result
            bar.set_postfix_str(result.label, refresh=False)
            bar.update(1)
        pool.shutdown(wait=True)
    except BaseException:
        _terminate(pool, context.processes)
        raise
    return out


#: How often (seconds) a worker checks that the process that started it is still there.
WATCH_SECONDS = 0.5
#: How long (seconds) a terminated worker is given to exit before it is killed.
_GRACE_SECONDS = 5.0
#: How long (seconds) a killed worker is waited for. SIGKILL cannot be caught, but it takes
#: effect only once the process leaves an uninterruptible wait (a worker still loading torch's
#: libraries from a busy disk can sit in one for seconds), and only then can it be joined.
_KILLED_SECONDS = 30.0


class _RecordingContext(SpawnContext):
    """The spawn context, remembering every process it starts (the pool's workers)."""

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[SpawnProcess] = []

    def Process(self, *args: Any, **kwargs: Any) -> SpawnProcess:  # noqa: N802 (the context's name)
        process = SpawnProcess(*args, **kwargs)
        self.processes.append(process)
        return process


def _terminate(pool: Any, processes: list[Any]) -> None:
    """Cancel what has not started and end every worker now: SIGTERM, then SIGKILL for one
    still there after :data:`_GRACE_SECONDS`; each is joined (no zombie left)."""
    import time

    pool.shutdown(wait=False, cancel_futures=True)
    started = [p for p in processes if p.pid is not None]
    for process in started:
        if process.exitcode is None:
            process.terminate()
    deadline = time.monotonic() + _GRACE_SECONDS
    for process in started:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.exitcode is None:
            process.kill()
            process.join(_KILLED_SECONDS)


def _worker_init(parent: int) -> None:
    """A worker's set-up: Ctrl-C is the parent's to handle (it terminates the workers), and on
    POSIX a daemon thread ends the worker once ``parent`` is no longer its parent process (it
    died and the worker was re-parented), so that no worker outlives its run even when the
    parent was killed outright. (Elsewhere the parent process id says nothing once the parent
    is gone, so there is no such thread.)"""
    import os
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.name == "posix":
        threading.Thread(
            target=_watch_parent, args=(parent,), name="wrapgrad-watch-parent", daemon=True
        ).start()


def _watch_parent(parent: int) -> None:
    import os
    import time

    while os.getppid() == parent:
        time.sleep(WATCH_SECONDS)
    os._exit(1)


def _in_worker(function: Any, *args: Any) -> Any:
    """``function(*args)`` in a worker, its exception made one the parent can unpickle.

    An exception crosses back pickled, and one whose class needs more than its message to be
    built again fails to unpickle in the parent, which then reports a worker "terminated
    abruptly" instead of the error. wrapgrad's own errors pickle (:class:`~wrapgrad.errors.
    WrapgradError`); another one that does not (a third-party objective's, say) is re-raised
    as its closest class that does (the same message; the worker's traceback, shown under it,
    names the original)."""
    try:
        return function(*args)
    except Exception as exc:
        portable = _portable(exc)
        if portable is exc:
            raise
        raise portable from exc


def _portable(exc: Exception) -> Exception:
    import pickle

    message = str(exc)
    for cls in type(exc).__mro__:
        if not issubclass(cls, Exception):
            continue
        try:
            candidate = exc if cls is type(exc) else cls(message)
            pickle.loads(pickle.dumps(candidate))
        except Exception:  # the next class may do
            continue
        return candidate
    return RuntimeError(message)


def _ensure(job: TrainJob) -> None:
    """Train (or find in the cache) a job's initial model, in a worker process."""
    with intra_op_threads(job.threads):
        base_model(job)
