"""Iterative training of neural SDEs (wrapgrad.sde.train_sde, Jha et al. 2022 Figure 2): rounds,
refreshes, the stopping rule, checkpoints and resume, the user's model unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import wrapgrad
from wrapgrad.errors import UnknownNameError, WrapgradError, WrapgradValueError
from wrapgrad.guard import ModelSnapshot
from wrapgrad.sde import PAPER_LOOP, train_sde
from wrapgrad.sde.guide import example_keys
from wrapgrad.training import load_checkpoint

from .test_sde import make_resnet


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 16, 16, generator=g)
    y = torch.arange(16) % 5
    for c in range(5):  # a learnable signal: a bright patch per class
        x[y == c, :, 3 * c : 3 * c + 3, 2:6] += 1.0
    return x, y


FAST = {"batch_size": 8, "lr": 1e-2, "seed": 3}


def shaped(seed: int = 0) -> wrapgrad.sde.NeuralSDE:
    return wrapgrad.to_sde(make_resnet(), noise="attribution_shaped", seed=seed)


def state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if k != "_extra_state"}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def stored_maps(sde) -> dict[bytes, torch.Tensor]:
    keys, maps = sde.guide_store.items()
    return {bytes(k.tolist()): m for k, m in zip(keys, maps, strict=True)}


def test_each_round_reshapes_the_noise_with_the_maps_of_the_model_just_trained(data) -> None:
    x, y = data
    sde = shaped()
    at_round_end: list[dict[str, torch.Tensor]] = []
    guides: list[dict[str, torch.Tensor] | None] = []

    def on_round_end(record, model) -> None:
        at_round_end.append(state(model.to_plain()))
        guides.append(None if model.guide_model is None else state(model.guide_model))

    result = train_sde(
        sde, data, rounds=3, epochs_per_round=2, patience=None, on_round_end=on_round_end, **FAST
    )
    assert result.stopped == "rounds"
    assert [r.round for r in result.rounds] == [1, 2, 3]
    assert [r.epoch for r in result.rounds] == [2, 4, 6]
    assert len(result.train.history) == 6
    # Maps after rounds 1 and 2 (all 16 examples), none after the last.
    assert [r.refreshed for r in result.rounds] == [16, 16, 0]
    assert result.rounds[0].refresh_seconds > 0
    assert result.rounds[2].refresh_seconds == 0
    # Round 1 ran without a guide model (Brownian, the paper's start); the guide of round r + 1
    # is the network as round r left it (the plain architecture, same parameter names).
    assert guides[0] is None
    for r in (1, 2):
        assert same(guides[r], at_round_end[r - 1])
    # The stored maps are the guide explainer's maps of the last guide model, for the labels.
    expected = sde._prepare(sde.compute_guide(x, y))
    maps = stored_maps(sde)
    for key, row in zip(example_keys(x), expected, strict=True):
        assert torch.equal(maps[key], row)


def test_unshaped_noise_only_splits_the_epochs(data) -> None:
    for sigma in (0.5, 0.0):
        sde = wrapgrad.to_sde(make_resnet(), sigma=sigma, seed=0)
        result = train_sde(sde, data, rounds=2, epochs_per_round=1, patience=None, **FAST)
        assert [r.refreshed for r in result.rounds] == [0, 0]
        assert sde.guide_model is None
        assert len(sde.guide_store) == 0


class FixedLoss:
    """An objective whose epoch losses are chosen by hand (zero gradient)."""

    def __init__(self, losses: list[float], batches: int) -> None:
        self.losses, self.batches, self.calls = losses, batches, 0

    def __call__(self, model, inputs, target, generator=None):
        epoch = self.calls // self.batches
        self.calls += 1
        return model(inputs).sum() * 0.0 + self.losses[epoch]


@pytest.mark.parametrize(
    ("patience", "min_delta", "rounds", "stopped"),
    [
        (1, 0.0, [1, 2, 3], "converged"),  # 0.95 does not improve on 0.9: stop after round 3
        (2, 0.0, [1, 2, 3, 4, 5], "rounds"),  # 0.8 improves again: all five rounds
        (1, 0.2, [1, 2], "converged"),  # 0.9 is not 20 % below 1.0
        (None, 0.0, [1, 2, 3, 4, 5], "rounds"),
    ],
)
def test_the_run_stops_when_the_round_loss_stops_improving(
    data, patience, min_delta, rounds, stopped
) -> None:
    losses = [1.0, 0.9, 0.95, 0.8, 0.85]
    sde = wrapgrad.to_sde(make_resnet(), seed=0)
    result = train_sde(
        sde,
        data,
        FixedLoss(losses, batches=2),
        rounds=5,
        epochs_per_round=1,
        patience=patience,
        min_delta=min_delta,
        **FAST,
    )
    assert [r.round for r in result.rounds] == rounds
    assert result.stopped == stopped
    assert [r.loss for r in result.rounds] == pytest.approx(losses[: len(rounds)])


def test_paper_defaults_and_a_callback_that_stops(data) -> None:
    sde = wrapgrad.to_sde(make_resnet(), seed=0)
    result = train_sde(sde, data, rounds=4, epochs_per_round=1, on_round_end=lambda r, m: True)
    config = result.train.config
    assert (config.optimizer, config.lr, config.scheduler) == (
        PAPER_LOOP["optimizer"],
        PAPER_LOOP["lr"],
        PAPER_LOOP["scheduler"],
    )
    assert result.stopped == "callback"
    assert len(result.rounds) == 1


class InterruptError(Exception):
    pass


class CrossEntropy:
    """Cross-entropy that raises at its ``stop_at``-th call (an interrupted run)."""

    name = "cross_entropy"

    def __init__(self, stop_at: int | None = None) -> None:
        self.stop_at, self.calls = stop_at, 0

    def __call__(self, model, inputs, target, generator=None):
        self.calls += 1
        if self.calls == self.stop_at:
            raise InterruptError
        return nn.functional.cross_entropy(model(inputs), target)


@pytest.mark.parametrize("where", ["round_end", "mid_round"])
def test_resume_gives_the_uninterrupted_run_bit_for_bit(tmp_path, data, where) -> None:
    run = {"rounds": 3, "epochs_per_round": 2, "patience": None, **FAST}
    whole = train_sde(shaped(), data, CrossEntropy(), **run)

    def interrupt_round(record, model) -> None:
        if record.round == 2:
            raise InterruptError  # before the epoch-4 checkpoint: the one of epoch 3 is kept

    if where == "round_end":
        with pytest.raises(InterruptError):
            train_sde(
                shaped(),
                data,
                CrossEntropy(),
                checkpoint_dir=tmp_path,
                on_round_end=interrupt_round,
                **run,
            )
        kept = 3
    else:  # the first batch of epoch 6 (2 batches per epoch): mid-round 3
        with pytest.raises(InterruptError):
            train_sde(shaped(), data, CrossEntropy(stop_at=11), checkpoint_dir=tmp_path, **run)
        kept = 5
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == kept
    resumed = train_sde(shaped(), data, CrossEntropy(), checkpoint_dir=tmp_path, resume=True, **run)
    assert resumed.train.resumed_from == kept
    assert same(state(resumed.model), state(whole.model))
    assert torch.equal(resumed.model.rng_state(), whole.model.rng_state())
    assert [r.round for r in resumed.rounds] == [1, 2, 3]
    assert [r.loss for r in resumed.rounds] == [r.loss for r in whole.rounds]
    assert same(state(resumed.model.guide_model), state(whole.model.guide_model))
    a, b = stored_maps(resumed.model), stored_maps(whole.model)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_converged_run_stays_stopped_on_resume(tmp_path, data) -> None:
    run = {"rounds": 5, "epochs_per_round": 1, "patience": 1, "min_delta": 0.5, **FAST}
    first = train_sde(shaped(), data, checkpoint_dir=tmp_path, **run)
    assert first.stopped == "converged"
    assert len(first.rounds) < 5
    again = train_sde(shaped(), data, checkpoint_dir=tmp_path, resume=True, **run)
    assert again.stopped == "converged"
    assert len(again.train.history) == len(first.train.history)
    assert same(state(again.model), state(first.model))


def test_a_partial_refresh_rotates_and_keeps_the_other_maps(data) -> None:
    x, y = data
    sde = shaped()
    snapshots: list[dict[bytes, torch.Tensor]] = []
    result = train_sde(
        sde,
        data,
        rounds=4,
        epochs_per_round=1,
        patience=None,
        refresh_fraction=0.25,
        on_round_end=lambda r, m: snapshots.append(dict(stored_maps(m))),
        **FAST,
    )
    assert [r.refreshed for r in result.rounds] == [4, 4, 4, 0]
    after = dict(stored_maps(sde))
    # Round 2 filled every map (4 refreshed, the other 12 on demand, all by the round-1 guide);
    # the refreshes after rounds 2 and 3 each replaced 4 others (a rotation), keeping the rest.
    before = snapshots[2]  # the store at the end of round 3, before its refresh
    assert len(before) == len(after) == 16
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert len(changed) == 4
    guide_maps = sde._prepare(sde.compute_guide(x, y))
    for key, row in zip(example_keys(x), guide_maps, strict=True):
        if key in changed:  # computed in another batch: equal up to float reassociation
            torch.testing.assert_close(after[key], row, rtol=1e-5, atol=1e-6)


def test_the_users_model_is_bitwise_unchanged_by_training_and_explanation(data) -> None:
    x, y = data
    model = make_resnet().train()
    model(x).sum().backward()  # gradients of its own
    snapshot = ModelSnapshot(model)
    sde = wrapgrad.to_sde(model, noise="attribution_shaped", seed=0)
    result = train_sde(sde, data, rounds=2, epochs_per_round=1, patience=None, **FAST)
    assert snapshot.differences() == []
    assert not same(state(result.model.to_plain()), state(model))  # it trained its own copy
    for explained in (sde.eval(), sde.to_plain().eval()):
        for method in ("saliency", "integrated_gradients"):
            wrapgrad.wrap(explained, method, guard="verify")(x[:4], target=y[:4])
    assert snapshot.differences() == []


def test_a_dataloader_computes_every_map_on_demand(data) -> None:
    loader = DataLoader(TensorDataset(*data), batch_size=8, shuffle=False)
    sde = shaped()
    result = train_sde(sde, loader, rounds=2, epochs_per_round=1, patience=None, lr=1e-2)
    assert [r.refreshed for r in result.rounds] == [-1, 0]
    # Refreshed after round 1 without inputs; round 2 computed each map the first time a batch
    # held it, for the guide model's predicted class.
    x, _ = data
    expected = sde._prepare(sde.compute_guide(x))
    maps = stored_maps(sde)
    assert len(maps) == 16
    for key, row in zip(example_keys(x), expected, strict=True):
        torch.testing.assert_close(maps[key], row, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"epochs": 3}, "epochs"),
        ({"epochs_per_rond": 2}, "options"),
        ({"rounds": 0}, "rounds"),
        ({"refresh_fraction": 0.0}, "refresh_fraction"),
        ({"patience": 0}, "patience"),
        ({"min_delta": -1.0}, "min_delta"),
        ({"scheduler": "one_cycle"}, "scheduler"),
    ],
)
def test_bad_options_name_the_argument(data, kwargs, argument) -> None:
    sde = shaped()
    with pytest.raises(WrapgradError) as info:
        train_sde(sde, data, **kwargs)
    assert str(info.value).startswith(argument)


def test_bad_input_is_refused(data) -> None:
    with pytest.raises(WrapgradError, match=r"^sde: expected a NeuralSDE"):
        train_sde(make_resnet(), data)
    with pytest.raises(UnknownNameError, match="epochs_per_round"):
        train_sde(shaped(), data, epochs_per_rond=2)
    loader = DataLoader(TensorDataset(*data), batch_size=8)
    with pytest.raises(WrapgradValueError, match=r"^refresh_fraction"):
        train_sde(shaped(), loader, refresh_fraction=0.5)
