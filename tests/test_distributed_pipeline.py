"""A pipeline run on 2 gloo processes writes exactly the single process's results.json.

Seven samples in global batches of 2 (2 + 2 + 2 + 1: rank 0 does batches 0 and 2, rank 1 batches
1 and 3, so the shards differ in size), enhancers with two seeds, a calibration (rank 0 only,
broadcast), a map metric, a seeded model metric with fresh noise, and an attack.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from wrapgrad_pipeline.runner import Pipeline

from tests._ranks import run_ranks, spawn_ranks
from wrapgrad.distributed import world
from wrapgrad.registry import get_registry
from wrapgrad.sharding import ShardStore

#: What may differ between two runs of one pipeline (clocks) and what records the ranks.
_CLOCKS = {"created", "duration_s", "timings_s", "explain_timings_s", "metric_timings_s"}


def tables(weights: Path) -> dict[str, Any]:
    return {
        "pipeline": {"name": "dist", "seed": 3},
        "data": {"dataset": "digits8x8", "samples": 7},
        "model": {"name": "small_cnn", "weights": str(weights)},
        "calibration": {
            "ng": {
                "perturber": "weight",
                "target_drop": 0.1,
                "samples": 40,
                "options": {"draws": 2},
            }
        },
        "explain": {
            "methods": ["saliency"],
            "batch_size": 2,
            "replicates": 2,
            "enhancers": [
                {"label": "Baseline"},
                {"label": "SG", "name": "smoothgrad", "options": {"n_samples": 3}},
                {
                    "label": "NG",
                    "name": "noisegrad",
                    "options": {"n_samples": 2, "sigma": "@calibration.ng.sigma"},
                },
            ],
        },
        "evaluate": {
            "metrics": [
                {"label": "sparseness", "quantus": "Sparseness"},
                {
                    "label": "sensitivity",
                    "quantus": "MaxSensitivity",
                    "params": {"nr_samples": 2},
                    "fresh_noise": True,
                    "samples": 5,
                },
            ],
            "attacks": [
                {"name": "ifia", "samples": 3, "params": {"steps": 2, "epsilon": 0.1, "k": 8}}
            ],
        },
        "report": {"make_figures": False},
    }


def _weights(folder: Path) -> Path:
    torch.manual_seed(0)
    model = get_registry().get("model", "small_cnn").factory(in_channels=1, num_classes=10)
    torch.save(model.state_dict(), folder / "weights.pt")
    return folder / "weights.pt"


def _worker(rank: int, folder: Path) -> None:
    run = Pipeline.from_dict(tables(folder / "weights.pt")).run(folder / "two", progress=False)
    torch.save({"world": world(), "results": run.results}, folder / f"out{rank}.pt")


def _dies(rank: int, folder: Path) -> None:
    if rank == 1:  # killed after it wrote its first explain shard
        write = ShardStore.write

        def write_then_die(self: ShardStore, name: str, payload: Any) -> Path:
            write(self, name, payload)
            os._exit(3)

        ShardStore.write = write_then_die  # type: ignore[method-assign]
    Pipeline.from_dict(tables(folder / "weights.pt")).run(folder / "killed", progress=False)


def same(a: Any, b: Any, where: str = "") -> None:
    """``a == b`` number for number (NaN equal to NaN), clocks left out; fails naming the key."""
    if isinstance(a, dict):
        assert isinstance(b, dict), where
        keys = set(a) - _CLOCKS
        assert keys == set(b) - _CLOCKS, where
        for k in keys:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list), where
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float), where
        assert math.isnan(b), where
    else:
        assert a == b, where


def without_world(results: dict) -> dict:
    return {k: v for k, v in results.items() if k != "world_size"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, dict, list[dict]]:
    folder = tmp_path_factory.mktemp("dist_pipeline")
    weights = _weights(folder)
    Pipeline.from_dict(tables(weights)).run(folder / "one", progress=False)
    run_ranks(_worker, 2, folder, timeout=240)
    outs = [torch.load(folder / f"out{r}.pt", weights_only=False) for r in range(2)]
    return folder, json.loads((folder / "one" / "results.json").read_text()), outs


def test_two_processes_write_the_single_process_results_number_for_number(runs) -> None:
    folder, single, outs = runs
    two = json.loads((folder / "two" / "results.json").read_text())
    assert single["world_size"] == 1
    assert two["world_size"] == 2
    same(without_world(single), without_world(two))
    assert len(two["scores"]["saliency"]["NG"]["sparseness"]) == 7
    assert len(two["scores_by_seed"]["saliency"]["SG"]["sensitivity"]) == 2
    assert len(two["scores"]["saliency"]["SG"]["sensitivity"]) == 5
    assert len(two["scores"]["saliency"]["NG"]["ifia:topk_intersection"]) == 3
    # the seeds matter: the two enhancer seeds give different scores
    sg = two["scores_by_seed"]["saliency"]["SG"]["sparseness"]
    assert sg[0] != sg[1]
    # every rank returns rank 0's results; the report was written once
    for rank, out in enumerate(outs):
        assert out["world"].rank == rank
        same(out["results"], two)
    assert (folder / "two" / "report.md").is_file()
    shards = sorted(p.name for p in (folder / "two" / "shards" / "explain").iterdir())
    assert shards == [f"batch-{i:06d}.pt" for i in range(4)]
    assert not (folder / "one" / "shards").exists()  # a single process writes none


def test_a_killed_rank_fails_the_run_naming_it_and_a_rerun_completes(runs) -> None:
    folder, single, _ = runs
    codes, hung, logs = spawn_ranks(_dies, 2, folder, timeout=240)
    assert hung == []
    assert codes[1] == 3
    assert codes[0] != 0
    assert "rank 1 of 2 stopped" in logs[0]
    shards = folder / "killed" / "shards" / "explain"
    written = {p.name: p.stat().st_mtime_ns for p in shards.iterdir()}
    assert "batch-000001.pt" in written  # rank 1's finished shard stays, whole
    assert not (folder / "killed" / "results.json").exists()
    # a rerun (here in one process) reads the finished shards and computes the rest
    rerun = Pipeline.from_dict(tables(folder / "weights.pt")).run(folder / "killed", progress=False)
    assert {p: shards.joinpath(p).stat().st_mtime_ns for p in written} == written
    same(without_world(rerun.results), without_world(single))
