"""wrapgrad.train under torch.distributed: 2 gloo processes on the CPU against one process.

One spawned run (two fresh interpreters cost seconds) does every distributed part; the parent
process runs the single-process references and compares.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import wrapgrad
from tests._ranks import run_ranks
from wrapgrad.distributed import (
    RankFailedError,
    World,
    agree,
    alone,
    any_rank,
    broadcast_object,
    derived_seed,
    sum_over_ranks,
    timeout,
    world,
)
from wrapgrad.errors import WrapgradTypeError, WrapgradValueError
from wrapgrad.training.batches import _slice as slice_of
from wrapgrad.training.batches import global_batches, sharded_source

N = 7  # odd, with batch_size 4: global batches of 4 and 3, split 2+2 and 2+1
AAT = {"objective": "aat", "epsilon": 0.1, "steps": 2, "k": 4, "ig_steps": 3, "lam": 0.5}
RUN = {"batch_size": 4, "lr": 0.2, "optimizer": "sgd", "seed": 5}


def net(seed: int = 0, norm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(16, 8), nn.ReLU()]
    if norm:
        layers += [nn.BatchNorm1d(8), nn.Dropout(0.3)]
    return nn.Sequential(*layers, nn.Linear(8, 3))


def samples() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(N, 1, 4, 4, generator=g), torch.randint(0, 3, (N,), generator=g)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class FailsOnRankOne:
    """Cross-entropy, except that rank 1 raises in its second step."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, model, inputs, target, generator=None):
        self.calls += 1
        if world().rank == 1 and self.calls == 2:
            raise WrapgradValueError("inputs: deliberately bad on rank 1")
        return nn.functional.cross_entropy(model(inputs), target)


def _worker(rank: int, folder: Path) -> None:
    x, y = samples()
    out: dict[str, object] = {"world": world()}
    # A fresh run with the double-backward objective; rank 0 writes the checkpoint.
    model = net()
    result = wrapgrad.train(model, (x, y), epochs=1, checkpoint_dir=folder / "two", **AAT, **RUN)
    out["fresh"] = state(model)
    out["history"] = [r.to_dict()["metrics"] for r in result.history]
    out["world_size"] = result.world_size
    out["hooks"] = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]
    # Resume the one-process checkpoint on two ranks.
    model = net()
    wrapgrad.train(
        model, (x, y), epochs=2, checkpoint_dir=folder / "one", resume=True, **AAT, **RUN
    )
    out["resumed"] = state(model)
    # A DataLoader in order is re-sharded from its data set.
    model = net(1)
    loader = DataLoader(TensorDataset(x, y), batch_size=3, shuffle=False)
    wrapgrad.train(model, loader, objective="natural", epochs=2, lr=0.1, optimizer="sgd")
    out["loader"] = state(model)
    # Buffers (BatchNorm) and dropout: no hang, every rank ends with rank 0's buffers.
    model = net(2, norm=True)
    wrapgrad.train(model, (x, y), objective="natural", epochs=2, batch_size=N, lr=0.1)
    out["norm"] = state(model)
    # A rank that raises makes every rank raise, naming it.
    try:
        wrapgrad.train(net(), (x, y), objective=FailsOnRankOne(), epochs=1, batch_size=4)
    except RankFailedError as exc:
        out["failure"] = (str(exc), exc.ranks, type(exc.__cause__).__name__)
    # The collectives of wrapgrad.distributed.
    out["broadcast"] = broadcast_object({"from": rank})
    out["any"] = (any_rank(rank == 1), any_rank(False))
    out["sum"] = sum_over_ranks(torch.tensor([1.0, rank])).tolist()
    # alone(): rank 0 trains as a single process on the full data while rank 1 does not train
    # (without alone() rank 0 would wait for rank 1 in DDP's collectives)
    with alone():
        out["alone_world"] = world()
        if rank == 0:
            model = net(3)
            wrapgrad.train(model, (x, y), objective="natural", epochs=1, batch_size=4, lr=0.1)
            out["alone"] = state(model)
    torch.save(out, folder / f"out{rank}.pt")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("ranks")
    x, y = samples()
    wrapgrad.train(net(), (x, y), epochs=1, checkpoint_dir=folder / "one", **AAT, **RUN)
    run_ranks(_worker, 2, folder)
    return folder, [torch.load(folder / f"out{r}.pt", weights_only=False) for r in range(2)]


def close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tol: float = 1e-6) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=tol, rtol=0) for k in a)


def test_two_processes_train_the_weights_of_one_process_on_the_full_batch(two_ranks) -> None:
    _, outs = two_ranks
    x, y = samples()
    model = net()
    result = wrapgrad.train(model, (x, y), epochs=1, **AAT, **RUN)
    one = state(model)
    assert not close(one, state(net()), 1e-3)  # the step did move the weights
    for out in outs:
        assert out["world"].size == 2
        assert out["world_size"] == 2
        assert close(out["fresh"], one)
        # epoch metrics are summed over ranks: the single process's, on every rank
        for key, value in result.history[0].to_dict()["metrics"].items():
            assert out["history"][0][key] == pytest.approx(value, abs=1e-6)
        assert sum(out["hooks"]) == 0  # the DDP wrapper left nothing on the model
    assert [o["world"].rank for o in outs] == [0, 1]


def test_a_two_process_checkpoint_resumes_in_one_process_and_back(two_ranks) -> None:
    folder, outs = two_ranks
    x, y = samples()
    uninterrupted = net()
    wrapgrad.train(uninterrupted, (x, y), epochs=2, **AAT, **RUN)
    # written by rank 0 of the 2-process run, resumed here in one process
    model = net(9)  # other initial weights: the checkpoint's replace them
    result = wrapgrad.train(
        model, (x, y), epochs=2, checkpoint_dir=folder / "two", resume=True, **AAT, **RUN
    )
    assert result.resumed_from == 1
    assert result.world_size == 1
    assert close(state(model), state(uninterrupted))
    # and a one-process checkpoint resumed on two ranks
    for out in outs:
        assert close(out["resumed"], state(uninterrupted))


def test_a_dataloader_is_resharded_in_its_order(two_ranks) -> None:
    _, outs = two_ranks
    x, y = samples()
    model = net(1)
    loader = DataLoader(TensorDataset(x, y), batch_size=3, shuffle=False)
    wrapgrad.train(model, loader, objective="natural", epochs=2, lr=0.1, optimizer="sgd")
    for out in outs:
        assert close(out["loader"], state(model))


def test_buffers_and_dropout_train_without_a_hang_and_agree(two_ranks) -> None:
    _, (a, b) = two_ranks
    assert all(torch.equal(a["norm"][k], b["norm"][k]) for k in a["norm"])
    assert not torch.equal(a["norm"]["3.running_mean"], torch.zeros(8))


def test_a_rank_that_raises_fails_every_rank_naming_it(two_ranks) -> None:
    _, outs = two_ranks
    for rank, out in enumerate(outs):
        message, ranks, cause = out["failure"]
        assert ranks == (1,)
        assert "rank 1 of 2 failed: WrapgradValueError: inputs: deliberately bad" in message
        assert "objective 'FailsOnRankOne' in epoch 1" in message
        assert cause == ("WrapgradValueError" if rank == 1 else "NoneType")


def test_the_control_collectives(two_ranks) -> None:
    _, outs = two_ranks
    for out in outs:
        assert out["broadcast"] == {"from": 0}
        assert out["any"] == (True, False)
        assert out["sum"] == [2.0, 1.0]


def test_alone_makes_a_rank_a_single_process(two_ranks) -> None:
    _, outs = two_ranks
    x, y = samples()
    model = net(3)
    wrapgrad.train(model, (x, y), objective="natural", epochs=1, batch_size=4, lr=0.1)
    assert all(out["alone_world"] == World() for out in outs)
    assert close(outs[0]["alone"], state(model))


# -- in one process: the arithmetic and the single-process behaviour ---------------------------------
@pytest.mark.parametrize(("n", "batch", "size"), [(7, 4, 2), (10, 3, 4), (5, 5, 3), (1, 4, 2)])
def test_shards_cover_every_global_batch_once_and_weight_to_its_mean(n, batch, size) -> None:
    losses = torch.rand(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    for b in global_batches(n, batch, torch.Generator().manual_seed(0)):
        parts = [slice_of(b, r, size) for r in range(size)]
        taken = torch.cat([idx for idx, w in parts if w > 0])
        assert sorted(taken.tolist()) == sorted(b.tolist())  # no sample dropped or doubled
        assert max(len(i) for i, w in parts if w) - min(len(i) for i, w in parts if w) <= 1
        # DDP averages over ranks: (1/W) sum_r w_r mean_r == the global batch's mean
        averaged = sum(w * losses[i].mean() for i, w in parts) / size
        assert float(averaged) == pytest.approx(float(losses[b].mean()), abs=1e-12)


def test_global_batches_are_the_single_process_batches() -> None:
    x, y = samples()
    source = wrapgrad.training.TensorBatches(x, y, 3)
    mine = [yb for _, yb in source.epoch_batches(torch.Generator().manual_seed(4))]
    ours = [y[b] for b in global_batches(N, 3, torch.Generator().manual_seed(4))]
    assert all(torch.equal(a, b) for a, b in zip(mine, ours, strict=True))
    assert [b.tolist() for b in global_batches(5, 2, None, drop_last=True)] == [[0, 1], [2, 3]]


def test_sharded_sources_check_the_data() -> None:
    x, y = samples()
    assert len(sharded_source((x, y), 4, 1, 2)) == 2
    with pytest.raises(WrapgradTypeError, match="data: expected"):
        sharded_source([1, 2], 4, 0, 2)
    weighted = DataLoader(
        TensorDataset(x, y),
        batch_size=2,
        sampler=torch.utils.data.WeightedRandomSampler([1] * N, N),
    )
    with pytest.raises(WrapgradTypeError, match=r"data: .*WeightedRandomSampler"):
        sharded_source(weighted, 4, 0, 2)


def test_one_process_has_a_world_of_one_and_plain_errors(monkeypatch) -> None:
    assert world() == World()
    assert not world().distributed
    assert world().main
    with pytest.raises(KeyError):  # a single process re-raises its own error unchanged
        agree(KeyError("x"), "step")
    agree(None, "step")
    assert broadcast_object([1]) == [1]
    assert any_rank(True)
    assert not any_rank(False)
    assert sum_over_ranks(torch.tensor([2.0])).tolist() == [2.0]
    monkeypatch.setenv("WRAPGRAD_DIST_TIMEOUT", "12.5")
    assert timeout().total_seconds() == 12.5
    monkeypatch.setenv("WRAPGRAD_DIST_TIMEOUT", "soon")
    with pytest.raises(WrapgradValueError, match="WRAPGRAD_DIST_TIMEOUT"):
        timeout()
    with pytest.raises(WrapgradValueError, match="timeout"):
        timeout(0)
    seeds = {derived_seed(3, "batch", i) for i in range(100)}
    assert len(seeds) == 100
    assert all(0 <= s < 2**63 for s in seeds)
