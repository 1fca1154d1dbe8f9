"""The real command line under torchrun: ``torchrun --nproc-per-node 2 --standalone -m wrapgrad run``.

Two CPU (gloo) processes started by torchrun itself (``python -m torch.distributed.run``), not by
the test's own launcher (``tests/_ranks.py``): what is checked is the command's behaviour there,
as docs/distributed.md describes it. A successful run exits 0, records ``world_size == 2`` in
``results.json`` and prints once (rank 0 only); a run whose explainer fails on rank 1 only (a
plugin explainer, installed for the subprocesses through ``PYTHONPATH`` and an entry point)
exits non-zero, and the error printed names the failing rank. Every launch runs in its own
session under a timeout, and the whole session is killed when it passes, so nothing can hang.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from wrapgrad.registry import get_registry

pytestmark = pytest.mark.slow

#: Seconds one torchrun launch may take (measured: about 25 s on two busy cores).
LAUNCH_TIMEOUT = 240

PIPELINE = """
[pipeline]
name = "torchrun"
seed = 1

[data]
dataset = "digits8x8"
samples = 5

[model]
name = "small_cnn"
weights = "weights.pt"

[explain]
methods = ["{method}"]
batch_size = 2

[[explain.enhancers]]
label = "Baseline"

[report]
make_figures = false
"""

#: A plugin whose explainer is saliency on rank 0 and fails on rank 1 (5 samples in batches of
#: 2: rank 1 computes global batch 1).
PLUGIN = """
from wrapgrad import hookimpl
from wrapgrad.differentiable import saliency
from wrapgrad.distributed import world
from wrapgrad.errors import WrapgradValueError
from wrapgrad.records import ExplainerSpec, ExplainerTraits

WRAPGRAD_HOOK_API = "1.0"


def fails_on_rank_one(model, inputs, target=None, **kwargs):
    if world().rank == 1:
        raise WrapgradValueError("planted failure of rank_one_fails")
    return saliency(model, inputs, target)


@hookimpl
def wrapgrad_explainers():
    yield ExplainerSpec(
        name="rank_one_fails",
        factory=lambda: fails_on_rank_one,
        summary="saliency, except on rank 1 (a test plugin)",
        traits=ExplainerTraits(name="rank_one_fails", requires_grad_inputs=True),
    )
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weights for the pipeline's model, and the test plugin in a site directory of its own."""
    root = tmp_path_factory.mktemp("torchrun_cli")
    torch.manual_seed(0)
    model = get_registry().get("model", "small_cnn").factory(in_channels=1, num_classes=10)
    torch.save(model.state_dict(), root / "weights.pt")
    site = root / "site"
    site.mkdir()
    (site / "rank_one_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "rank_one_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rank-one-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[wrapgrad]\nrank_one_plugin = rank_one_plugin\n")
    return root


def torchrun(folder: Path, method: str, out: Path) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc-per-node 2 --standalone -m wrapgrad run`` on the tiny pipeline."""
    pipeline = folder / f"{method}.toml"
    pipeline.write_text(PIPELINE.format(method=method), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRAPGRAD_")}
    env.update(
        OMP_NUM_THREADS="1",
        WRAPGRAD_DIST_TIMEOUT="60",  # a stuck collective fails well inside LAUNCH_TIMEOUT
        WRAPGRAD_CACHE=str(folder / "cache"),
        PYTHONPATH=os.pathsep.join(
            [str(folder / "site"), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        "-m",
        "wrapgrad",
        "run",
        str(pipeline),
        "--out",
        str(out),
    ]
    # A session of its own: on a timeout torchrun *and* its workers are killed.
    proc = subprocess.Popen(
        command,
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(
            f"torchrun did not finish within {LAUNCH_TIMEOUT} s\n--- stdout ---\n{stdout}\n"
            f"--- stderr ---\n{stderr}"
        )
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def _shown(run: subprocess.CompletedProcess[str]) -> str:
    return f"exit {run.returncode}\n--- stdout ---\n{run.stdout}\n--- stderr ---\n{run.stderr}"


def test_torchrun_run_writes_world_size_and_prints_on_rank_zero_only(folder: Path) -> None:
    out = folder / "ok"
    run = torchrun(folder, "saliency", out)
    assert run.returncode == 0, _shown(run)
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["world_size"] == 2
    # The explain step was sharded: 5 samples in 3 global batches, one shard file each.
    shards = sorted(p.name for p in (out / "shards" / "explain").iterdir())
    assert shards == [f"batch-{i:06d}.pt" for i in range(3)]
    # Both workers write to torchrun's stdout; only rank 0 prints: the report once, each path once.
    title = (out / "report.md").read_text(encoding="utf-8").splitlines()[0]
    assert title.startswith("#")
    assert run.stdout.count(title + "\n") == 1, _shown(run)
    assert run.stdout.count(f"report:  {out / 'report.md'}") == 1, _shown(run)
    assert run.stdout.count(f"results: {out / 'results.json'}") == 1, _shown(run)
    assert "wrapgrad: error" not in run.stderr


def test_torchrun_run_failing_on_one_rank_names_it(folder: Path) -> None:
    out = folder / "failed"
    run = torchrun(folder, "rank_one_fails", out)
    assert run.returncode != 0, _shown(run)
    # Rank 1 reports its own failure (rank 0 too, unless torchrun stopped it first): the line
    # names the rank that printed it and the rank that failed, with its error. (A progress bar
    # on stderr may precede it on the same line.)
    failed = r"rank 1 of 2 failed: WrapgradValueError: planted failure of rank_one_fails"
    assert re.search(rf"wrapgrad: error \(rank 1 of 2\): explain[^\n]*: {failed}", run.stderr), (
        _shown(run)
    )
    assert "rank 0 of 2 failed" not in run.stderr, _shown(run)
    assert "results:" not in run.stdout
    assert not (out / "results.json").exists()
