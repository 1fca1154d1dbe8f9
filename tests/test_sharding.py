"""wrapgrad.sharding: global batches over ranks, shard files, failures; 2 gloo processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests._ranks import run_ranks, spawn_ranks
from wrapgrad.distributed import RankFailedError, World, world
from wrapgrad.errors import WrapgradTypeError, WrapgradValueError
from wrapgrad.sharding import (
    ShardStore,
    Unit,
    fingerprint,
    global_batches,
    rank_units,
    run_sharded,
)

N, BATCH = 7, 2  # four global batches: 2, 2, 2, 1; rank 0 gets 0 and 2, rank 1 gets 1 and 3


def work(unit: Unit) -> dict[str, torch.Tensor]:
    """A unit's 'maps': noise seeded from the unit's global index, plus where it ran."""
    g = torch.Generator().manual_seed(unit.seed(11, "test"))
    return {"maps": torch.randn(unit.size, 3, generator=g), "rank": torch.tensor(world().rank)}


class Counting:
    def __init__(self, fail_at: int | None = None, die_at: int | None = None) -> None:
        self.calls: list[int] = []
        self.fail_at, self.die_at = fail_at, die_at

    def __call__(self, unit: Unit) -> dict[str, torch.Tensor]:
        if unit.index == self.die_at:
            os._exit(3)  # a rank killed mid-run: no exception, no report
        if unit.index == self.fail_at:
            raise WrapgradValueError("inputs: deliberately bad batch")
        self.calls.append(unit.index)
        return work(unit)


def _worker(rank: int, folder: Path) -> None:
    units = global_batches(N, BATCH)
    out: dict[str, object] = {}
    counting = Counting()
    out["results"] = run_sharded(
        units, counting, what="explain", store=ShardStore(folder / "shards", "k1")
    )
    out["calls"] = counting.calls
    try:
        run_sharded(units, Counting(fail_at=1), what="evaluate")
    except RankFailedError as exc:
        out["failure"] = (str(exc), exc.ranks)
    torch.save(out, folder / f"out{rank}.pt")


def _dies(rank: int, folder: Path) -> None:
    run_sharded(
        global_batches(N, BATCH),
        Counting(die_at=3),
        what="explain",
        store=ShardStore(folder / "shards", "k1"),
    )


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("shard_ranks")
    run_ranks(_worker, 2, folder, timeout=60)
    return folder, [torch.load(folder / f"out{r}.pt", weights_only=False) for r in range(2)]


def same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x["maps"], y["maps"]) for x, y in zip(a, b, strict=True)
    )


def test_two_ranks_give_the_single_process_results_each_unit_once(two_ranks) -> None:
    folder, outs = two_ranks
    single = run_sharded(global_batches(N, BATCH), work, what="explain")
    assert sum(len(r["maps"]) for r in single) == N
    for out in outs:
        assert same(out["results"], single)
        assert [int(r["rank"]) for r in out["results"]] == [0, 1, 0, 1]  # round robin
    assert outs[0]["calls"] == [0, 2]
    assert outs[1]["calls"] == [1, 3]
    store = ShardStore(folder / "shards", "k1")
    assert store.names() == [f"batch-{i:06d}" for i in range(4)]
    # a rerun in one process reads every shard and computes nothing
    counting = Counting()
    assert same(run_sharded(global_batches(N, BATCH), counting, what="x", store=store), single)
    assert counting.calls == []


def test_a_rank_that_raises_fails_every_rank_naming_it(two_ranks) -> None:
    _, outs = two_ranks
    for out in outs:
        message, ranks = out["failure"]
        assert ranks == (1,)
        assert "evaluate (batch 1)" in message or "evaluate:" in message
        assert "rank 1 of 2 failed: WrapgradValueError: inputs: deliberately bad batch" in message


def test_a_killed_rank_fails_the_run_naming_it_and_a_rerun_completes(tmp_path) -> None:
    codes, hung, logs = spawn_ranks(_dies, 2, tmp_path, timeout=60)
    assert hung == []  # bounded: the survivor does not wait for the dead rank
    assert codes[1] == 3
    assert codes[0] != 0
    assert "RankFailedError" in logs[0]
    assert "rank 1 of 2 stopped" in logs[0]
    store = ShardStore(tmp_path / "shards", "k1")
    # rank 0 finished batches 0 and 2, rank 1 batch 1 before it died: whole and readable
    assert store.names() == ["batch-000000", "batch-000001", "batch-000002"]
    assert all(store.read(name) is not None for name in store.names())
    counting = Counting()
    rerun = run_sharded(global_batches(N, BATCH), counting, what="explain", store=store)
    assert counting.calls == [3]  # only the missing batch
    assert same(rerun, run_sharded(global_batches(N, BATCH), work, what="explain"))


# -- in one process ------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "batch", "size"), [(7, 2, 2), (10, 3, 4), (5, 5, 3), (0, 4, 2)])
def test_rank_shares_cover_every_global_batch_once(n, batch, size) -> None:
    units = global_batches(n, batch)
    assert [i for u in units for i in range(u.start, u.stop)] == list(range(n))
    assert all(u.size == batch for u in units[:-1])
    shares = [rank_units(units, World(rank=r, size=size)) for r in range(size)]
    assert sorted(u.index for share in shares for u in share) == list(range(len(units)))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_unit_seeds_and_limits() -> None:
    a, b = Unit(3, 6, 8), Unit(4, 8, 10)
    assert a.seed(1) == Unit(3, 0, 0).seed(1) != b.seed(1) != a.seed(2)
    assert a.take(7) == slice(0, 1)
    assert a.take(100) == slice(0, 2)
    assert b.take(5) == slice(0, 0)


def test_the_store_ignores_other_keys_and_broken_files(tmp_path) -> None:
    store = ShardStore(tmp_path, "k1")
    assert store.read("batch-000000") is None
    store.write("batch-000000", {"maps": torch.ones(2)})
    assert torch.equal(store.read("batch-000000")["maps"], torch.ones(2))
    assert ShardStore(tmp_path, "other").read("batch-000000") is None
    (tmp_path / "batch-000001.pt").write_bytes(b"half a file")
    assert store.read("batch-000001") is None
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_single_process_errors_and_checks() -> None:
    with pytest.raises(WrapgradValueError, match="deliberately"):
        run_sharded(global_batches(4, 2), Counting(fail_at=1), what="x")
    with pytest.raises(WrapgradTypeError, match="work: expected a callable"):
        run_sharded(global_batches(4, 2), None, what="x")  # type: ignore[arg-type]
    with pytest.raises(WrapgradValueError, match="batch_size"):
        global_batches(4, 0)
    assert fingerprint("a", torch.ones(2)) == fingerprint("a", torch.ones(2))
    assert fingerprint("a", torch.ones(2)) != fingerprint("a", torch.zeros(2))
    assert fingerprint(torch.nn.Linear(2, 2)) != fingerprint(torch.nn.Linear(2, 2))
