"""Training jobs of the pipeline's ``train`` step: one objective x one training seed.

A :class:`TrainJob` is plain data (picklable), so the step runs its jobs one after another in
its own process or in worker processes (``[train].workers``) with exactly the same code,
:func:`run_job`; each job runs with its own number of torch threads (``threads``), so its
weights do not depend on where it ran. Models and data sets come from the registry
(:mod:`wrapgrad.catalog`), the training from :func:`wrapgrad.train`.

A job may checkpoint under the run's output directory (``checkpoint_dir``): the loop writes
``checkpoint.pt`` atomically after every epoch and the job writes ``job.json``, its whole
description; ``resume`` continues from a checkpoint only when that description is this job's
(same data, initial model, objective, options, loop settings, seed and torch version), else it
trains afresh. Nothing else is cached: the initial models are the reference models'
recipe-trained weights, whose cache checks its own entries (:func:`wrapgrad.pretrained`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch

from wrapgrad.sharding import intra_op_threads

__all__ = ["JobResult", "TrainJob", "base_model", "run_job"]


@attrs.frozen(kw_only=True)
class TrainJob:
    """Everything one training needs (and nothing that cannot be pickled)."""

    label: str
    """The model's label in the run (``"AAT@0"``)."""
    group: str
    """The objective's label (``"AAT"``): the report aggregates a group's seeds."""
    objective: str
    """A registered objective name."""
    options: Mapping[str, Any]
    """The objective's options (preset and file merged)."""
    loop: Mapping[str, Any]
    """:func:`wrapgrad.train`'s own settings (``epochs``, ``lr``, ``batch_size``, ...)."""
    seed: int
    """The training seed (shuffling, random starts)."""
    model: str
    dataset: str
    split_seed: int
    """Seed of the data set's train/test split: training uses its train part, the accuracy
    its test part."""
    limit: int | None = None
    """Train on the first ``limit`` training items."""
    init: str = "pretrained"
    """``"pretrained"``: fine-tune the recipe-trained model of seed ``base_seed``;
    ``"scratch"``: a fresh model initialised from ``seed``."""
    base_seed: int = 0
    recipe: Mapping[str, Any] = attrs.field(factory=dict)
    """Overrides of the initial model's recipe (``epochs``, ``dataset_options``, ...)."""
    threads: int = 1
    """torch intra-op threads while the job runs."""
    checkpoint_dir: str | None = None
    resume: bool = False

    def describe(self) -> dict[str, Any]:
        """What identifies the job's result (``job.json``; ``checkpoint_dir`` and ``resume``
        are where and whether, not what)."""
        d = attrs.asdict(self)
        for key in ("checkpoint_dir", "resume", "label"):
            d.pop(key)
        d["torch"] = torch.__version__
        return json.loads(json.dumps(d, sort_keys=True, default=repr))


@attrs.frozen(kw_only=True)
class JobResult:
    """What a job sends back: the trained weights and what the report says about them."""

    label: str
    state: dict[str, torch.Tensor]
    """The model's ``state_dict`` (CPU tensors)."""
    info: dict[str, Any]


def base_model(job: TrainJob, progress: bool = False) -> torch.nn.Module:
    """The job's initial model: the recipe-trained reference model (trained now if the cache
    has none) or a fresh one initialised from the training seed (global RNG state restored)."""
    from wrapgrad.catalog import load_dataset, pretrained

    if job.init == "pretrained":
        return pretrained(
            job.model, job.dataset, seed=job.base_seed, progress=progress, **dict(job.recipe)
        )
    from wrapgrad_robust.cli import build_model

    return build_model(job.model, load_dataset(job.dataset, split="test", limit=1), job.seed)


def _train_data(job: TrainJob) -> Any:
    from wrapgrad.catalog import load_dataset

    options = {} if job.limit is None else {"limit": job.limit}
    return load_dataset(job.dataset, split="train", seed=job.split_seed, **options)


def _checkpoint(job: TrainJob) -> tuple[Path | None, bool]:
    """``(checkpoint_dir, resume)``: resume only from a checkpoint of this very job."""
    from wrapgrad.files import atomic_write

    if job.checkpoint_dir is None:
        return None, False
    folder = Path(job.checkpoint_dir)
    described = json.dumps(job.describe(), indent=1, sort_keys=True)
    record = folder / "job.json"
    same = record.is_file() and record.read_text(encoding="utf-8") == described
    if not same:
        (folder / "checkpoint.pt").unlink(missing_ok=True)
        atomic_write(record, described)
    return folder, bool(job.resume and same)


def run_job(job: TrainJob, progress: bool = False) -> JobResult:
    """Train one job (module docstring) and measure its model's natural test accuracy."""
    from wrapgrad.catalog import load_dataset
    from wrapgrad.training import accuracy, train

    with intra_op_threads(job.threads):
        started = time.perf_counter()
        model = base_model(job, progress=progress)
        data = _train_data(job)
        checkpoint_dir, resume = _checkpoint(job)
        history: list[dict[str, Any]] = []
        resumed_from = 0
        if int(job.loop.get("epochs", 1)) > 0:
            result = train(
                model,
                data.tensors(),
                job.objective,
                progress=progress,
                seed=job.seed,
                checkpoint_dir=checkpoint_dir,
                resume=resume,
                **dict(job.loop),
                **dict(job.options),
            )
            history = [r.to_dict() for r in result.history]
            resumed_from = result.resumed_from
        seconds = time.perf_counter() - started
        model.eval()
        test = load_dataset(job.dataset, split="test", seed=job.split_seed)
        test_accuracy = accuracy(model, test.inputs, test.labels)
    start = (
        f"the recipe-trained model of seed {job.base_seed}"
        if job.init == "pretrained"
        else f"a fresh model (seed {job.seed})"
    )
    source = (
        f"{start}, not trained further"
        if not history
        else f"{job.objective}, {len(history)} epoch(s) from {start}"
    )
    info = {
        "name": job.model,
        "group": job.group,
        "objective": job.objective,
        "options": dict(job.options),
        "loop": dict(job.loop),
        "seed": job.seed,
        "init": job.init,
        "base_seed": job.base_seed if job.init == "pretrained" else None,
        "source": source,
        "train_items": len(data),
        "train_seconds": round(seconds, 3),
        "resumed_from_epoch": resumed_from,
        "history": history,
        "test_accuracy": test_accuracy,
        "accuracy_on": f"{job.dataset} test, split seed {job.split_seed} ({len(test)} items)",
    }
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return JobResult(label=job.label, state=state, info=info)
