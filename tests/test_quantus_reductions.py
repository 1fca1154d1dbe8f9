"""The Quantus bridge's per-sample scores: the reductions of curves and per-layer scores (by hand
and against Quantus' raw results), their declared directions (on a linear model whose exact
attributions are known), and the Quantus classes the bridge repairs (NumPy 2, BatchSufficiency,
ROAD, InputInvariance, SmoothMPRT, Focus's mosaics, SensitivityN's unavailability)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import quantus
import torch
from torch import nn
from wrapgrad_quantus import QuantusMosaicMetric, quantus_metric
from wrapgrad_quantus.reductions import (
    aopc,
    area_under_curve,
    mean_over_layers,
    mean_over_percentages,
)

import wrapgrad
from wrapgrad.errors import UnavailableError, WrapgradValueError

from ._trained import state_of, unchanged

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- the reductions by hand ---------------------------------------------------------------------
def test_area_under_curve_by_hand() -> None:
    # Trapezoids of unit width: [1, .5, 0] -> (1+.5)/2 + (.5+0)/2 = 1; [.2, .2, .8, .4] ->
    # .2 + .5 + .6 = 1.3; a single point has no area.
    got = area_under_curve([[1.0, 0.5, 0.0, 0.0], [0.2, 0.2, 0.8, 0.4]])
    np.testing.assert_allclose(got, [1.0, 1.3])
    assert area_under_curve([[0.7]]).tolist() == [0.0]
    with pytest.raises(WrapgradValueError, match=r"^curves: .*\(B, steps\)"):
        area_under_curve([0.1, 0.2])


def test_aopc_by_hand() -> None:
    # L = 4 drops plus d_0 = 0: (0.1 + 0.3 + 0.3 + 0.5) / 5 = 0.24; (-0.2 + 0 + 0 + 0.2) / 5 = 0.
    np.testing.assert_allclose(aopc([[0.1, 0.3, 0.3, 0.5], [-0.2, 0.0, 0.0, 0.2]]), [0.24, 0.0])


def test_mean_over_percentages_by_hand() -> None:
    np.testing.assert_allclose(mean_over_percentages([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]]), [0.6, 0])


def test_mean_over_layers_by_hand() -> None:
    # The unrandomised similarity ("original", 1 by construction) is left out:
    # sample 0: (0.5 + 0.1) / 2 = 0.3; sample 1: (-0.2 + 0.4) / 2 = 0.1.
    scores = {"original": [1.0, 1.0], "conv": [0.5, -0.2], "fc": [0.1, 0.4]}
    np.testing.assert_allclose(mean_over_layers(scores), [0.3, 0.1])
    with pytest.raises(WrapgradValueError, match="at least one randomised layer"):
        mean_over_layers({"original": [1.0]})
    with pytest.raises(WrapgradValueError, match="dict"):
        mean_over_layers([[0.1, 0.2]])  # type: ignore[arg-type]


# -- a linear model whose exact attributions are known ------------------------------------------
class Linear(nn.Module):
    """Two classes with logits ``(w·x, -w·x)``: feature ``j`` contributes exactly ``w_j x_j``
    to class 0 against a black (zero) baseline."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x * self.w).flatten(1).sum(1)
        return torch.stack([s, -s], 1)


@pytest.fixture
def linear() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = Linear().eval()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return model, x, torch.zeros(4, dtype=torch.long)


def _maps(sign: float) -> Any:
    def contributions(model: Any, inputs: torch.Tensor, target: Any = None, **_: Any) -> Any:
        return sign * (inputs * model.w).detach()

    return contributions


#: Curve and per-percentage metrics with small settings (patches of 2x2 on the 8x8 inputs).
CURVES: dict[str, dict[str, Any]] = {
    "PixelFlipping": {"features_in_step": 4},
    "Selectivity": {"patch_size": 2},
    "RegionPerturbation": {"patch_size": 2, "perturb_baseline": "black"},
    "ROAD": {"seed": 0},
    "IROF": {"seed": 0},
}


@pytest.mark.parametrize("name", sorted(CURVES))
def test_declared_directions_hold_on_exact_attributions(name: str, linear) -> None:
    """The exact contributions ``w ⊙ x`` score at least as well as their negation on every
    sample, strictly on one, in the direction the registered metric declares (for
    RegionPerturbation the paper's, higher, where Quantus 0.6 says lower)."""
    model, x, y = linear
    metric = quantus_metric(name, **CURVES[name])
    spec = wrapgrad.get_registry().get("metric", f"quantus_{name}")
    assert metric.higher_is_better is spec.higher_is_better is not None
    good = metric(model, x, y, wrapgrad.wrap(model, _maps(1.0)))
    bad = metric(model, x, y, wrapgrad.wrap(model, _maps(-1.0)))
    assert good.dtype == torch.float64
    assert good.shape == (4,)
    sign = 1.0 if metric.higher_is_better else -1.0
    gain = sign * (good - bad)
    assert bool((gain >= 0).all()), (good, bad)
    assert bool((gain > 0).any()), (good, bad)


def test_region_perturbation_direction_follows_the_order() -> None:
    assert quantus_metric("RegionPerturbation").higher_is_better is True  # MoRF, the default
    assert quantus_metric("RegionPerturbation", order="lerf").higher_is_better is False
    assert quantus_metric("RegionPerturbation", order="random").higher_is_better is None
    assert quantus.RegionPerturbation.score_direction.name == "LOWER"  # Quantus' declaration


def _by_hand_auc(curve: np.ndarray) -> float:
    return float(sum((curve[k] + curve[k + 1]) / 2 for k in range(len(curve) - 1)))


def test_curve_scores_are_their_raw_curves_reduced(linear) -> None:
    """Each call's score is the documented reduction of what Quantus returns for the same
    call (``raw``), computed here by hand."""
    model, x, y = linear
    explain = wrapgrad.wrap(model, _maps(1.0))
    for name in ("PixelFlipping", "Selectivity"):
        metric = quantus_metric(name, **CURVES[name])
        curves = np.asarray(metric.raw(model, x, y, explain), dtype=np.float64)
        assert curves.shape[0] == 4
        assert curves.shape[1] > 1
        want = [_by_hand_auc(c) for c in curves]
        np.testing.assert_allclose(metric(model, x, y, explain).numpy(), want, rtol=1e-12)
    region = quantus_metric("RegionPerturbation", **CURVES["RegionPerturbation"])
    drops = np.asarray(region.raw(model, x, y, explain), dtype=np.float64)
    np.testing.assert_allclose(
        region(model, x, y, explain).numpy(), drops.sum(1) / (drops.shape[1] + 1), rtol=1e-12
    )
    # ROAD: Quantus reports the accuracy per percentage; the per-sample scores' mean is its mean.
    road = quantus_metric("ROAD", seed=0)
    accuracy = road.raw(model, x, y, explain)
    scores = road(model, x, y, explain)
    assert isinstance(accuracy, dict)
    assert len(accuracy) == 50
    np.testing.assert_allclose(scores.mean().item(), np.mean(list(accuracy.values())), rtol=1e-12)
    assert set(np.unique(road.quantus.sample_curves)) <= {0.0, 1.0}


def test_road_keeps_every_batch_of_samples(linear) -> None:
    """Quantus' ROAD averages the first batch's curves only; the bridge scores every sample."""
    model, x, y = linear
    explain = wrapgrad.wrap(model, _maps(1.0))
    whole = quantus_metric("ROAD", seed=0)(model, x, y, explain)
    batched = quantus_metric("ROAD", seed=0, batch_size=2)(model, x, y, explain)
    assert batched.shape == (4,)
    torch.testing.assert_close(batched, whole)


def test_mprt_family_scores_are_means_over_the_randomised_layers(linear) -> None:
    _model, x, y = linear
    conv = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(128, 2))
    conv.eval()
    explain = wrapgrad.wrap(conv, "saliency")
    for name in ("MPRT", "SmoothMPRT"):
        metric = quantus_metric(name, seed=0, **({"nr_samples": 2} if name == "SmoothMPRT" else {}))
        raw = metric.raw(conv, x, y, explain)
        assert "original" in raw
        assert len(raw) == 3
        layers = [np.asarray(v) for k, v in raw.items() if k != "original"]
        np.testing.assert_allclose(
            metric(conv, x, y, explain).numpy(), np.mean(layers, axis=0), rtol=1e-12
        )
        assert metric.higher_is_better is False


def test_smooth_mprt_explains_with_the_given_explainer(linear) -> None:
    """Quantus 0.6's SmoothMPRT explains the noisy inputs with quantus.explain whatever
    explain_func it is given; through the bridge every explanation is the caller's."""
    _, x, y = linear
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval()
    before = state_of(model)
    calls: list[int] = []

    def counted(m: Any, inputs: torch.Tensor, target: Any = None, **kw: Any) -> torch.Tensor:
        calls.append(inputs.shape[0])
        return wrapgrad.wrap(m, "saliency")(inputs, target=target)

    metric = quantus_metric("SmoothMPRT", nr_samples=3, seed=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Using quantus 'explain'")
        scores = metric(model, x, y, wrapgrad.wrap(model, counted))
    # The original maps, then nr_samples noisy ones for the original model and each layer.
    assert len(calls) == 1 + 3 * (1 + 1)
    assert scores.shape == (4,)
    assert bool(torch.isfinite(scores).all())
    assert unchanged(model, before)


# -- Quantus classes the bridge repairs ----------------------------------------------------------
def test_irof_runs_on_numpy_2_without_touching_numpy(
    linear, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x, y = linear
    explain = wrapgrad.wrap(model, _maps(1.0))
    had_trapz = hasattr(np, "trapz")
    ours = quantus_metric("IROF")(model, x, y, explain)
    assert hasattr(np, "trapz") is had_trapz  # numpy's namespace as it was
    assert ours.shape == (4,)
    assert bool(torch.isfinite(ours).all())
    a = explain(x, target=y).numpy()
    plain = quantus.IROF(return_aggregate=False, disable_warnings=True)
    if not had_trapz:  # NumPy 2: Quantus' own IROF fails, the reason for the subclass
        with pytest.raises(AttributeError, match="trapz"):
            plain(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a, device="cpu")
        monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    theirs = plain(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a, device="cpu")
    np.testing.assert_allclose(ours.numpy(), np.asarray(theirs, dtype=np.float64), rtol=1e-12)


def test_batch_sufficiency_scores_as_sufficiency(linear) -> None:
    """BatchSufficiency is Sufficiency (Dasgupta et al. 2022) with a reshape that fails on a
    batch of more than one sample; the bridge's scores are Sufficiency's."""
    model, x, y = linear
    explain = wrapgrad.wrap(model, "saliency")
    a = explain(x, target=y).numpy()
    with pytest.raises(ValueError, match="reshape"):
        quantus.BatchSufficiency(disable_warnings=True)(
            model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a, device="cpu"
        )
    batch = quantus_metric("BatchSufficiency")(model, x, y, explain)
    single = quantus_metric("Sufficiency")(model, x, y, explain)
    assert batch.shape == (4,)
    torch.testing.assert_close(batch, single, rtol=0, atol=0)


class PaddedCNN(nn.Module):
    """A padded convolution inside a Sequential first: Quantus' bias shift cannot undo an input
    shift here (and cannot find the convolution)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def test_input_invariance_gives_kindermans_verdicts(linear) -> None:
    """Kindermans et al. 2019: gradients are input-shift invariant, input x gradient and
    Integrated Gradients with a zero baseline are not; on any model, unchanged."""
    _, x, _ = linear
    for model in (PaddedCNN().eval(), nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()):
        y = model(x).argmax(1)
        before = state_of(model)
        metric = quantus_metric("InputInvariance")
        verdicts = {
            method: metric(model, x, y, wrapgrad.wrap(model, method)).tolist()
            for method in ("saliency", "input_x_gradient", "integrated_gradients")
        }
        assert verdicts == {
            "saliency": [1.0] * 4,
            "input_x_gradient": [0.0] * 4,
            "integrated_gradients": [0.0] * 4,
        }
        assert unchanged(model, before)
        assert "forward" not in vars(model)


class PooledCNN(nn.Module):
    """Takes inputs of any size (global pooling), as Focus' mosaics need."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def _tiles(positions: torch.Tensor, size: int = 16) -> torch.Tensor:
    """``(B, 1, size, size)``: 1 on the flagged tiles."""
    b = positions.shape[0]
    grid = positions.reshape(b, 1, 2, 1, 2, 1).float()
    return grid.expand(b, 1, 2, size // 2, 2, size // 2).reshape(b, 1, size, size)


def test_focus_scores_mosaics_in_the_mosaic_form(linear) -> None:
    _, x, _ = linear
    mosaics = torch.cat([torch.cat([x, x.flip(0)], -1), torch.cat([x.flip(0), x], -1)], -2)
    positions = torch.tensor([[1, 0, 0, 1]] * 4)
    model, target = PooledCNN().eval(), torch.zeros(4, dtype=torch.long)
    spec = wrapgrad.get_registry().get("metric", "quantus_focus")
    assert (spec.requires, spec.higher_is_better) == ("mosaic", True)
    focus = wrapgrad.metric("quantus_focus")
    assert isinstance(focus, QuantusMosaicMetric)

    def on(flags: torch.Tensor) -> Any:
        def relevance(m: Any, inputs: torch.Tensor, target: Any = None, **_: Any) -> Any:
            return _tiles(flags) + 0.0 * inputs

        return wrapgrad.wrap(model, relevance)

    # Focus is the share of positive relevance on the target class's tiles.
    right = focus(model, mosaics, target, on(positions), positions)
    wrong = focus(model, mosaics, target, on(1 - positions), positions)
    half = focus(model, mosaics, target, on(torch.tensor([[1, 1, 0, 0]] * 4)), positions)
    torch.testing.assert_close(right, torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-8)
    torch.testing.assert_close(wrong, torch.zeros(4, dtype=torch.float64), rtol=0, atol=1e-8)
    torch.testing.assert_close(half, torch.full((4,), 0.5, dtype=torch.float64), atol=1e-8, rtol=0)
    with pytest.raises(WrapgradValueError, match=r"^positions: expected \(4, 4\) flags"):
        focus(model, mosaics, target, on(positions), positions[:, :3])
    with pytest.raises(WrapgradValueError, match=r"^custom_batch: Focus scores 2x2 mosaics"):
        quantus_metric("Focus")(model, mosaics, target, on(positions))


def test_sensitivity_n_is_unavailable_with_its_reason(linear) -> None:
    model, x, y = linear
    assert "quantus_sensitivity_n" not in wrapgrad.get_registry().names("metric")
    with pytest.raises(UnavailableError) as info:
        wrapgrad.metric("quantus_sensitivity_n")
    assert "no score per sample" in str(info.value)
    assert ".raw(" in str(info.value)
    metric = quantus_metric("SensitivityN", n_max_percentage=0.5)
    explain = wrapgrad.wrap(model, _maps(1.0))
    with pytest.raises(WrapgradValueError, match="no score per sample"):
        metric(model, x, y, explain)
    # Quantus' own result: one correlation across the 4 samples per n = 1 .. 32 features.
    assert np.asarray(metric.raw(model, x, y, explain)).shape == (32,)
