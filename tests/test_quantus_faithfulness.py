"""wrapgrad_quantus.faithfulness: the bridge's FaithfulnessCorrelation gives Quantus' own scores,
number for number, draws exactly what Quantus draws, and shares the plan between maps."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import quantus
import torch
from torch import nn
from wrapgrad_quantus import faithfulness as planned_module
from wrapgrad_quantus import quantus_metric
from wrapgrad_quantus.faithfulness import PlannedFaithfulnessCorrelation, planned
from wrapgrad_quantus.memo import MemoModel

from ._trained import one_thread


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.fixture(autouse=True)
def _no_kept_plans() -> Iterator[None]:
    planned_module._PLANS.clear()
    yield
    planned_module._PLANS.clear()


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 5)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _case() -> tuple[nn.Module, np.ndarray, np.ndarray, list[np.ndarray]]:
    model = Net().eval()
    g = np.random.default_rng(0)
    x = g.random((10, 3, 6, 6), dtype=np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy()
    maps = [g.standard_normal(x.shape).astype(np.float32) for _ in range(3)]
    return model, x, y, maps


def _scores(cls: type, model: nn.Module, x, y, a, seed: int, **params) -> tuple[list, tuple]:
    """Scores of one call with NumPy's RNG seeded, and the RNG state after it."""
    metric = cls(return_aggregate=False, disable_warnings=True, **params)
    np.random.seed(seed)
    out = metric(model=model, x_batch=x, y_batch=y, a_batch=a, device="cpu", batch_size=4)
    return out, np.random.get_state()


def _same_state(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


@pytest.mark.parametrize(
    "params",
    [
        {"perturb_baseline": "black"},
        {"perturb_baseline": "uniform", "abs": True},  # the baseline itself is drawn from the RNG
        {"perturb_baseline": "mean", "normalise": False, "subset_size": 1},
    ],
)
def test_equal_to_quantus_number_for_number(params: dict) -> None:
    """Several batches (10 samples in batches of 4), three maps scored with the same seed (the
    second and third replay the first's plan): every score and the RNG state afterwards equal
    quantus.FaithfulnessCorrelation's."""
    params = {"nr_runs": 7, "subset_size": 5, **params}
    model, x, y, maps = _case()
    fast = planned(quantus.FaithfulnessCorrelation)
    assert fast is not quantus.FaithfulnessCorrelation
    for seed in (0, 1):
        for a in maps:
            want, state_want = _scores(
                quantus.FaithfulnessCorrelation, model, x, y, a, seed, **params
            )
            got, state_got = _scores(fast, model, x, y, a, seed, **params)
            assert got == want  # the very same floats
            assert _same_state(state_got, state_want)
    # every batch's plan was drawn once per seed and replayed for the two other maps
    assert len(planned_module._PLANS) == 2 * 3
    assert [p.replays for p in planned_module._PLANS.values()] == [2] * 6


def test_a_custom_perturb_func_is_called_every_time_in_quantus_order() -> None:
    calls = []

    def shift(arr: np.ndarray, indices: np.ndarray, **kwargs) -> np.ndarray:
        calls.append(1)
        out = arr.copy()
        out[np.arange(arr.shape[0])[:, None], indices] += np.random.uniform(size=indices.shape)
        return out

    model, x, y, maps = _case()
    params = {"nr_runs": 4, "subset_size": 3, "perturb_func": shift}
    want, state_want = _scores(quantus.FaithfulnessCorrelation, model, x, y, maps[0], 2, **params)
    n = len(calls)
    for _ in range(2):
        got, state_got = _scores(
            planned(quantus.FaithfulnessCorrelation), model, x, y, maps[0], 2, **params
        )
        assert got == want
        assert _same_state(state_got, state_want)
    assert len(calls) == 3 * n  # nothing replayed
    assert not planned_module._PLANS


def test_warns_for_every_unchanged_input_as_quantus_does() -> None:
    """A black baseline on inputs that are black where the subsets fall changes nothing."""
    model, x, y, maps = _case()
    x = x.copy()
    x[:3] = 0.0  # samples 0-2: every perturbation is a no-change
    params = {"nr_runs": 3, "subset_size": 4, "perturb_baseline": "black"}
    counts = []
    for cls in (quantus.FaithfulnessCorrelation, planned(quantus.FaithfulnessCorrelation)):
        for _ in range(2):  # the second planned call replays the plan
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                _scores(cls, model, x, y, maps[0], 0, **params)
            counts.append(sum("didn't cause change" in str(w.message) for w in seen))
    assert counts == [9, 9, 9, 9]


def test_the_bridge_shares_the_plan_and_the_predictions() -> None:
    """Through the bridge with shared predictions, a second map of the same batch draws and
    predicts nothing new: no forward pass instead of 1 + runs (the unperturbed inputs are
    remembered by the MemoModel, the perturbed ones with the plan)."""
    model, x, y, maps = _case()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    params = {"nr_runs": 6, "subset_size": 5, "seed": 4, "batch_size": 10}
    reference = quantus.FaithfulnessCorrelation(
        nr_runs=6, subset_size=5, return_aggregate=False, disable_warnings=True
    )
    metric = quantus_metric("FaithfulnessCorrelation", share_predictions=True, **params)
    assert isinstance(metric.quantus, PlannedFaithfulnessCorrelation)
    for k, a in enumerate(maps):
        calls = model.calls
        got = metric(model, xt, yt, a_batch=torch.from_numpy(a))
        np.random.seed(4)
        want = reference(model=model, x_batch=x, y_batch=y, a_batch=a, device="cpu", batch_size=10)
        assert got.tolist() == want
        spent = model.calls - calls - (1 + 6)  # the reference's own passes
        assert spent == (1 + 6 if k == 0 else 0)  # the first call predicts, later ones remember
    # Without shared predictions every call predicts afresh (the plan is still shared).
    plain = quantus_metric("FaithfulnessCorrelation", **params)
    calls = model.calls
    plain(model, xt, yt, a_batch=torch.from_numpy(maps[0]))
    assert model.calls - calls == 1 + 6
    assert not isinstance(model, MemoModel)


def test_other_classes_are_left_alone() -> None:
    assert planned(quantus.MaxSensitivity) is quantus.MaxSensitivity
    once = planned(quantus.FaithfulnessCorrelation)
    assert planned(once) is once
