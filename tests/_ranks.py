"""Run a function on several gloo processes on this CPU (the distributed tests' launcher).

``run_ranks(fn, 2, folder, *args)`` spawns two fresh interpreters, joins them into one gloo
process group through a rendezvous file in ``folder`` (no port to race for), runs
``fn(rank, folder, *args)`` in each with one torch thread, and fails the test with every rank's
output if a rank exits non-zero or the whole does not finish within ``timeout`` seconds.
``fn`` must live in an importable module (the spawned interpreters import it by name).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def _entry(fn: Callable[..., Any], rank: int, size: int, folder: str, args: tuple) -> None:
    log = Path(folder) / f"rank{rank}.log"
    with open(log, "w") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        sys.stdout = sys.stderr = out
        try:
            import torch
            import torch.distributed as dist

            torch.set_num_threads(1)
            os.environ.setdefault("WRAPGRAD_DIST_TIMEOUT", "30")
            from wrapgrad.distributed import init_process_group

            init_process_group(
                "gloo",
                init_method=f"file://{Path(folder) / 'rendezvous'}",
                rank=rank,
                world_size=size,
            )
            try:
                fn(rank, Path(folder), *args)
            finally:
                dist.destroy_process_group()
        except BaseException:
            traceback.print_exc()
            out.flush()
            os._exit(1)
        out.flush()


def spawn_ranks(
    fn: Callable[..., Any], size: int, folder: Path, *args: Any, timeout: float = 120
) -> tuple[list[int | None], list[int], dict[int, str]]:
    """Run ``fn(rank, folder, *args)`` on ``size`` gloo ranks; ``(exit codes, hung ranks, rank
    -> its output)`` (a rank still running after ``timeout`` seconds is killed)."""
    folder.mkdir(parents=True, exist_ok=True)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_entry, args=(fn, r, size, str(folder), args)) for r in range(size)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    logs = {
        r: (folder / f"rank{r}.log").read_text()
        for r in range(size)
        if (folder / f"rank{r}.log").exists()
    }
    return [p.exitcode for p in procs], hung, logs


def run_ranks(
    fn: Callable[..., Any], size: int, folder: Path, *args: Any, timeout: float = 120
) -> None:
    """Run ``fn(rank, folder, *args)`` on ``size`` gloo ranks; fail the test if any fails."""
    codes, hung, logs = spawn_ranks(fn, size, folder, *args, timeout=timeout)
    if hung or any(codes):
        shown = "\n".join(f"--- rank {r} (exit {codes[r]}) ---\n{text}" for r, text in logs.items())
        pytest.fail(f"ranks hung: {hung}, exit codes: {codes}\n{shown}")
