"""Several worker threads in one process (``run_sharded(workers=)``, ``wrapgrad run --workers``):
the same results in the same order as one worker, the thread count divided and restored, the
first failing unit's error, and a pipeline's results.json number for number."""

from __future__ import annotations

import contextvars
import json
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch
from wrapgrad_pipeline.context import ModelEntry, RunContext
from wrapgrad_pipeline.runner import Pipeline
from wrapgrad_pipeline.steps.explain import _worker_copy, explain_workers

import wrapgrad.sharding as sharding
from tests.test_distributed_pipeline import _weights, same, tables
from wrapgrad.errors import WrapgradValueError
from wrapgrad.sharding import ShardStore, Unit, global_batches, run_sharded


class Recording:
    """A unit's payload (seeded from the unit), recording the thread and torch's thread count."""

    def __init__(self, fail_at: tuple[int, ...] = ()) -> None:
        self.fail_at = fail_at
        self.threads: dict[int, tuple[str, int]] = {}
        self.lock = threading.Lock()

    def __call__(self, unit: Unit) -> torch.Tensor:
        # unit 1 finishes last of the first four: the results' order and the error's must not
        # follow the order of completion
        time.sleep(0.3 if unit.index == 1 else 0.02 * unit.index)
        with self.lock:
            self.threads[unit.index] = (threading.current_thread().name, torch.get_num_threads())
        if unit.index in self.fail_at:
            raise WrapgradValueError(f"inputs: bad batch {unit.index}")
        with warnings.catch_warnings():  # as wrap() does inside the workers
            warnings.simplefilter("ignore")
            return torch.randn(unit.size, generator=torch.Generator().manual_seed(unit.index))


def test_workers_give_one_workers_results_in_order_and_restore_the_thread_count(tmp_path):
    units = global_batches(9, 2)
    one = run_sharded(units, Recording(), what="x")
    filters = list(warnings.filters)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        work = Recording()
        store = ShardStore(tmp_path / "shards", "k")
        two = run_sharded(units, work, what="x", workers=2, store=store)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))
    assert len({name for name, _ in work.threads.values()}) == 2
    assert {n for _, n in work.threads.values()} == {1}  # 2 threads / 2 workers
    assert warnings.filters == filters
    assert store.names() == [f"batch-{i:06d}" for i in range(5)]


def test_the_first_failing_unit_in_order_is_the_error():
    """Unit 3 fails first in time, unit 1 later: the error is unit 1's."""
    with pytest.raises(WrapgradValueError, match="bad batch 1"):
        run_sharded(global_batches(9, 2), Recording(fail_at=(1, 3)), what="x", workers=2)


def test_workers_see_the_callers_context_variables_and_divided_threads_for_one_unit():
    """Context variables (the current registry of use_registry) hold in the workers; a share of
    one unit runs at the workers' thread count too."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[tuple[str, int]] = []

    def work(unit: Unit) -> int:
        seen.append((var.get(), torch.get_num_threads()))
        return unit.index

    token = var.set("caller")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert run_sharded(global_batches(4, 1), work, what="x", workers=2) == [0, 1, 2, 3]
        assert run_sharded(global_batches(1, 1), work, what="x", workers=2) == [0]
    finally:
        torch.set_num_threads(before)
        var.reset(token)
    assert seen == [("caller", 1)] * 5


def test_a_model_that_cannot_be_copied_names_workers():
    class Uncopyable(torch.nn.Linear):
        def __deepcopy__(self, memo):
            raise TypeError("holds a lock")

    with pytest.raises(WrapgradValueError, match=r"workers: .*Uncopyable.*--workers 1"):
        _worker_copy(Uncopyable(2, 2))


def test_workers_must_be_a_positive_int():
    with pytest.raises(WrapgradValueError, match="workers"):
        run_sharded(global_batches(3, 1), Recording(), what="x", workers=0)


def test_one_worker_where_the_global_rngs_are_drawn_from(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Dropout())
    pipeline = Pipeline.from_dict(tables(_weights(tmp_path)))
    context = RunContext(
        pipeline.config,
        out_dir=tmp_path,
        source_dir=tmp_path,
        smoke=False,
        progress=False,
        workers=2,
    )
    context.models = {"m": ModelEntry(label="m", model=model.eval())}
    assert explain_workers(context, ["saliency", "integrated_gradients"]) == 2
    assert explain_workers(context, ["saliency", "gradient_shap"]) == 1  # stochastic method
    assert explain_workers(context, ["saliency"], unseeded_enhancer=True) == 1
    context.models["m"].model.train()
    assert explain_workers(context, ["saliency"]) == 1  # dropout draws
    context.workers = 1
    assert explain_workers(context, ["saliency"]) == 1


def test_a_pipeline_on_two_workers_writes_one_workers_results(tmp_path, monkeypatch):
    weights = _weights(tmp_path)
    one = Pipeline.from_dict(tables(weights)).run(tmp_path / "one", progress=False)
    used: list[int] = []
    computed = sharding._computed

    def spy(units, work, store, workers):
        used.append(workers)
        return computed(units, work, store, workers)

    monkeypatch.setattr(sharding, "_computed", spy)
    assert torch.get_num_threads() == 1  # tests/conftest.py
    two = Pipeline.from_dict(tables(weights)).run(tmp_path / "two", progress=False, workers=2)
    assert 2 in used  # the explain step ran on two workers
    same(one.results, two.results)
    assert json.loads(Path(two.results_path).read_text())["scores"] == one.results["scores"]
    # per-method timings are shares of the step's wall time, not overlapping worker-seconds
    assert sum(two.results["explain_timings_s"].values()) <= two.results["timings_s"]["explain"]
    # Two threads divided among two workers: the explain step's maps are the one-thread maps
    # (the other steps then run at two threads, whose floats may differ in the last digits).
    torch.set_num_threads(2)
    try:
        halves = Pipeline.from_dict(tables(weights)).run(
            tmp_path / "halves", progress=False, workers=2
        )
    finally:
        torch.set_num_threads(1)
    for method, variants in one.context.explanations.items():
        for v, ex in variants.items():
            other = halves.context.explanations[method][v]
            for a, b in zip([ex, *ex.replicates], [other, *other.replicates], strict=True):
                assert torch.equal(a.raw, b.raw), (method, v)


def test_a_draw_from_the_global_generator_on_two_workers_is_refused_naming_workers(
    tmp_path, monkeypatch
):
    """A component that draws from the global generator without saying so (here every explain
    call draws once) would make the maps depend on the threads' timing: one worker reseeds per
    batch and runs; two workers fail naming workers."""
    from wrapgrad_pipeline.steps.explain import Builder

    built = Builder.__call__

    def drawing(self, **overrides):
        explain = built(self, **overrides)

        def call(*args, **kwargs):
            torch.rand(1)  # an undeclared draw
            return explain(*args, **kwargs)

        return call

    monkeypatch.setattr(Builder, "__call__", drawing)
    weights = _weights(tmp_path)
    Pipeline.from_dict(tables(weights)).run(tmp_path / "one", progress=False)
    with pytest.raises(WrapgradValueError, match=r"workers: something drew .*--workers 1"):
        Pipeline.from_dict(tables(weights)).run(tmp_path / "two", progress=False, workers=2)
