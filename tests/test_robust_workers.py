"""No worker process of the ``train`` step (``[train].workers > 1``) outlives its run.

``wrapgrad run`` is started as a subprocess on a pipeline whose two trainings would run for
hours; once both worker processes are there, the parent is sent SIGTERM (the command exits 143,
"wrapgrad: terminated", having terminated its workers) or SIGKILL (each worker notices that its
parent is gone and exits on its own). A training that raises ends the other, running ones at
once, and its error is what the step raises (one that does not unpickle as its closest class
that does). The workers are
found in ``/proc`` (Linux); every wait polls with a deadline, and a worker still there at the
end is killed, so that a failure leaves nothing behind.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wrapgrad.errors import UnknownNameError

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc"),
]

#: Two trainings of a million epochs each (hours): only a signal ends them.
PIPELINE = """
[pipeline]
name = "workers_outlive_nothing"

[data]
dataset = "digits8x8"
split = "test"
samples = 8

[train]
model = "small_cnn"
init = "scratch"
seeds = [0, 1]
workers = 2
limit = 64
epochs = 1000000
objectives = [{ label = "Nat", objective = "natural" }]

[explain]
methods = ["integrated_gradients"]

[[evaluate.metrics]]
label = "NA"
name = "natural_accuracy"
"""
STARTUP_S = 120.0  # the workers import torch: seconds on a busy 2-core machine
GONE_S = 10.0


def _stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, parent pid, start time)`` of a process, None once there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def _workers(parent: int) -> dict[int, int]:
    """``{pid: start time}`` of ``parent``'s multiprocessing workers."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is None or stat[1] != parent:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            found[int(entry.name)] = stat[2]
    return found


def _running(workers: dict[int, int]) -> list[int]:
    """The pids among ``workers`` still running (a zombie has exited; a pid reused by another
    process has another start time)."""
    out = []
    for pid, started in workers.items():
        stat = _stat(pid)
        if stat is not None and stat[2] == started and stat[0] not in "ZX":
            out.append(pid)
    return out


def _wait_gone(workers: dict[int, int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := _running(workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _kill(workers: dict[int, int]) -> None:
    for pid in _running(workers):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, dict[int, int], Path]]:
    """``(the command, its two workers, its stderr file)`` once both workers run."""
    config = tmp_path / "pipeline.toml"
    config.write_text(PIPELINE, encoding="utf-8")
    stderr = tmp_path / "stderr.txt"
    env = {
        **os.environ,
        "WRAPGRAD_CACHE": str(tmp_path / "cache"),
        "WRAPGRAD_DISABLE_PLUGIN_AUTOLOAD": "1",
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "wrapgrad", "run", str(config), "--quiet"]
    command += ["--out", str(tmp_path / "out")]
    workers: dict[int, int] = {}
    with stderr.open("wb") as sink:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=sink, env=env)
    try:
        deadline = time.monotonic() + STARTUP_S
        while len(workers) < 2:
            assert proc.poll() is None, f"the run ended early:\n{stderr.read_text()}"
            assert time.monotonic() < deadline, f"no two workers after {STARTUP_S} s"
            time.sleep(0.1)
            workers = _workers(proc.pid)
        yield proc, workers, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        _kill(workers)


def test_sigterm_ends_the_run_and_its_workers(started) -> None:
    proc, workers, stderr = started
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert "wrapgrad: terminated" in stderr.read_text()
    assert _wait_gone(workers, GONE_S) == [], "workers outlived the terminated run"


def test_workers_of_a_killed_run_exit_on_their_own(started) -> None:
    proc, workers, _ = started
    proc.kill()  # SIGKILL: nothing of the parent runs
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert _wait_gone(workers, GONE_S) == [], "workers outlived their killed parent"


def test_a_training_that_raises_ends_the_running_ones() -> None:
    from wrapgrad_robust.jobs import TrainJob
    from wrapgrad_robust.step import _run_jobs

    common = {
        "group": "Nat",
        "objective": "natural",
        "options": {},
        "model": "small_cnn",
        "split_seed": 0,
        "limit": 64,
        "init": "scratch",
    }
    jobs = [
        TrainJob(label="Nat@0", seed=0, dataset="digits8x8", loop={"epochs": 10**6}, **common),
        TrainJob(label="Nat@1", seed=1, dataset="no_such_dataset", loop={"epochs": 1}, **common),
    ]
    before = set(multiprocessing.active_children())
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            _run_jobs(jobs, 2, False)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        thread.join(STARTUP_S)
        assert not thread.is_alive(), "the failed training left the step waiting"
        # the worker's error itself (wrapgrad's errors pickle with their class)
        error = outcome["error"]
        assert isinstance(error, UnknownNameError), repr(error)
        assert "unknown dataset 'no_such_dataset'" in str(error)
        assert set(multiprocessing.active_children()) <= before  # joined: none left, no zombie
    finally:
        for process in set(multiprocessing.active_children()) - before:
            process.kill()
        thread.join(GONE_S)


class _NeedsTwoError(ValueError):
    """An exception whose constructor takes two arguments: pickle rebuilds it with one."""

    def __init__(self, what: str, why: str) -> None:
        super().__init__(f"{what}: {why}")


def test_an_error_that_does_not_unpickle_arrives_as_its_closest_class() -> None:
    import pickle

    from wrapgrad_robust.step import _portable

    error = _NeedsTwoError("objective", "diverged")
    with pytest.raises(TypeError):
        pickle.loads(pickle.dumps(error))  # what the parent would have met
    portable = _portable(error)
    assert type(portable) is ValueError
    assert str(portable) == "objective: diverged"
    known = UnknownNameError("dataset", "mnst", ["mnist"])
    assert _portable(known) is known  # wrapgrad's errors cross as they are
