"""The loop's ``"plateau"`` schedule (ReduceLROnPlateau on the epoch loss) and scheduler_options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import wrapgrad
from wrapgrad.errors import WrapgradValueError


class FixedLoss:
    """An objective whose loss is ``losses[epoch]`` whatever the weights (the gradient is zero),
    so the schedule sees a loss sequence chosen by hand."""

    def __init__(self, losses: list[float], batches: int) -> None:
        self.losses = losses
        self.batches = batches
        self.calls = 0

    def __call__(self, model, inputs, target, generator=None):
        epoch = self.calls // self.batches
        self.calls += 1
        return model(inputs).sum() * 0.0 + self.losses[epoch]


def _data(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ones(n, 2), torch.zeros(n, dtype=torch.long)


def test_plateau_reduces_the_rate_after_patience_epochs_without_improvement() -> None:
    # ReduceLROnPlateau(patience=1, factor=0.5): the rate halves once two epochs in a row fail
    # to improve on the best loss (then the count restarts).
    losses = [1.0, 1.0, 1.0, 0.5, 0.7, 0.6, 0.4]
    model = nn.Linear(2, 2)
    result = wrapgrad.train(
        model,
        _data(),
        FixedLoss(losses, batches=2),
        epochs=len(losses),
        batch_size=4,
        lr=1e-2,
        scheduler="plateau",
        scheduler_options={"factor": 0.5, "patience": 1},
    )
    assert [r.loss for r in result.history] == pytest.approx(losses)
    assert [r.lr for r in result.history] == pytest.approx(
        [1e-2, 1e-2, 5e-3, 5e-3, 5e-3, 2.5e-3, 2.5e-3]
    )


def test_plateau_resume_is_bit_identical_and_may_run_longer(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    y = (x[:, 0] > 0).long()
    run = {"batch_size": 8, "lr": 0.05, "scheduler": "plateau", "seed": 1}
    run["scheduler_options"] = {"factor": 0.5, "patience": 0}

    def fresh() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

    whole = wrapgrad.train(fresh(), (x, y), "natural", epochs=6, **run)
    part = fresh()
    wrapgrad.train(part, (x, y), "natural", epochs=3, checkpoint_dir=tmp_path, **run)
    # The schedule's length does not depend on epochs: the run continues with more of them.
    resumed = wrapgrad.train(
        part, (x, y), "natural", epochs=6, checkpoint_dir=tmp_path, resume=True, **run
    )
    assert resumed.resumed_from == 3
    for a, b in zip(whole.model.state_dict().values(), part.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [r.lr for r in resumed.history] == [r.lr for r in whole.history]
    assert [r.loss for r in resumed.history] == [r.loss for r in whole.history]


def test_scheduler_options_are_checked_and_part_of_a_resumed_run(tmp_path) -> None:
    data = _data()
    with pytest.raises(WrapgradValueError, match="scheduler_options"):
        wrapgrad.train(nn.Linear(2, 2), data, "natural", scheduler_options={"factor": 0.5})
    with pytest.raises(WrapgradValueError, match="scheduler_options"):
        wrapgrad.train(
            nn.Linear(2, 2), data, "natural", scheduler="plateau", scheduler_options={"facto": 1}
        )
    model = nn.Linear(2, 2)
    common = {"scheduler": "plateau", "checkpoint_dir": tmp_path}
    wrapgrad.train(model, data, "natural", scheduler_options={"patience": 2}, **common)
    with pytest.raises(WrapgradValueError, match="scheduler_options"):
        wrapgrad.train(
            model,
            data,
            "natural",
            epochs=2,
            resume=True,
            scheduler_options={"patience": 3},
            **common,
        )
