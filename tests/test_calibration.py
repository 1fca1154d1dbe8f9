"""Accuracy-drop calibration: the bisection kernel, the drop statistics, the calibrators, the CLI."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import wrapgrad_data
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from wrapgrad_calibration import NoisyAccuracy, bisect_level, drop_interval, relative_drop
from wrapgrad_data import load_dataset, train

import wrapgrad
from wrapgrad.calibration import CalibrationResult
from wrapgrad.errors import (
    UnknownNameError,
    WrapgradTypeError,
    WrapgradValueError,
    WrapgradWarning,
)
from wrapgrad.functional import ModelSnapshot

FAST = {"draws": 6, "progress": False}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- the pure kernels ------------------------------------------------------------------------------
def test_bisection_finds_the_level_of_a_linear_curve():
    res = bisect_level(lambda s: 0.5 * s, 0.05, start=0.01, tol=1e-4)
    assert res.converged
    assert res.bracketed
    assert abs(res.level - 0.1) < 1e-3
    assert abs(res.value - 0.05) <= 1e-4


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e3])
def test_bisection_handles_any_scale_of_a_sigmoid(scale):
    def f(s):
        return 1.0 / (1.0 + math.exp(-(s / scale - 1.0) * 8.0))

    res = bisect_level(f, 0.05, start=0.1, tol=1e-3, max_iter=60)
    assert res.converged
    assert abs(f(res.level) - 0.05) <= 1e-3


def test_bisection_terminates_on_a_steep_step():
    calls = []

    def step(s):
        calls.append(s)
        return 0.0 if s < 0.3 else 1.0

    res = bisect_level(step, 0.05, start=0.1, tol=0.005, max_iter=40, xtol=1e-6)
    assert res.bracketed
    assert not res.converged
    lo, hi = res.bracket
    assert lo < 0.3 <= hi
    assert hi - lo <= 1e-6 * hi
    assert len(calls) <= 40


def test_bisection_terminates_on_flat_curves():
    below = bisect_level(lambda s: 0.0, 0.05, start=0.1, max_expand=10, max_iter=50)
    assert not below.bracketed
    assert not below.converged
    assert len(below.points) == 11  # start + 10 growths
    above = bisect_level(lambda s: 1.0, 0.05, start=0.1, max_iter=25)
    assert above.bracketed
    assert not above.converged
    assert len(above.points) == 25
    assert above.bracket[1] < 1e-5  # it chased the jump down towards 0


def test_bisection_on_a_noisy_monotone_curve_lands_near_the_crossing():
    g = torch.Generator().manual_seed(0)
    wiggle = {}

    def f(s):
        wiggle.setdefault(s, float(torch.randn(1, generator=g)) * 0.002)
        return s * s + wiggle[s]

    res = bisect_level(f, 0.05, start=0.01, tol=0.005)
    assert abs(res.value - 0.05) <= 0.005
    assert abs(res.level - math.sqrt(0.05)) < 0.02


def test_relative_drop_by_hand():
    assert relative_drop(0.95, 0.95, 0.1) == 0.0
    assert relative_drop(0.1, 0.95, 0.1) == 1.0
    assert math.isclose(relative_drop(0.9, 0.95, 0.1), 1 - 0.8 / 0.85)


def test_drop_interval_covers_the_estimate_and_shrinks_with_draws():
    g = torch.Generator().manual_seed(1)
    clean = torch.ones(400, dtype=torch.bool)
    few = torch.rand(3, 400, generator=g) < 0.9
    many = torch.rand(60, 400, generator=g) < 0.9
    lo, hi = drop_interval(few, clean, 0.1, seed=0)
    est = relative_drop(float(few.float().mean()), 1.0, 0.1)
    assert lo <= est <= hi
    lo2, hi2 = drop_interval(many, clean, 0.1, seed=0)
    assert hi2 - lo2 < hi - lo
    assert drop_interval(torch.ones(4, 10, dtype=torch.bool), clean[:10], 0.1) == (0.0, 0.0)


# -- on a trained reference model -----------------------------------------------------------------
@pytest.fixture(scope="module")
def trained():
    result = train("small_cnn", "digits8x8", seed=0, epochs=4, progress=False)
    assert result.test_accuracy > 0.85
    return result.model


@pytest.fixture(scope="module")
def heldout():
    return load_dataset("digits8x8", split="test").tensors()


@pytest.fixture(scope="module")
def weight_result(trained, heldout):
    return wrapgrad.calibrate(trained, heldout, perturber="weight", target_drop=0.05, **FAST)


def test_weight_calibration_record(weight_result, heldout):
    r = weight_result
    assert isinstance(r, CalibrationResult)
    assert r.perturber == "weight"
    assert r.calibrator == "accuracy_drop"
    assert r.sigma > 0
    assert abs(r.drop - 0.05) <= 0.005 or not r.converged
    assert r.drop_ci[0] <= r.drop <= r.drop_ci[1]
    assert r.drop_ci[0] <= 0.05 <= r.drop_ci[1]
    assert r.num_samples == len(heldout[1])
    assert r.draws == 6
    assert r.acc_chance == 0.1
    assert math.isclose(r.accuracy, r.acc_clean - r.drop * (r.acc_clean - r.acc_chance))
    assert r.levels[0] == 0.0
    assert r.accuracies[0] == r.acc_clean
    assert list(r.levels) == sorted(r.levels)
    assert "sigma" in str(r)
    assert r.to_dict()["sigma"] == r.sigma
    # One name per quantity: a weight calibration sets sigma (sigma_NG) and no noise_level.
    assert r.noise_level is None
    assert r.to_dict()["noise_level"] is None
    assert r.level == r.sigma
    assert "alpha" not in r.to_dict()


def test_fresh_draws_at_the_returned_sigma_land_in_the_interval(trained, heldout, weight_result):
    r = weight_result
    fresh = NoisyAccuracy(trained, *heldout, draws=24, seed=12345)
    acc = float(fresh.correct(sigma=r.sigma).float().mean())
    drop = relative_drop(acc, r.acc_clean, r.acc_chance)
    assert r.drop_ci[0] <= drop <= r.drop_ci[1]


def test_accuracy_curve_is_monotone_within_noise(trained, heldout, weight_result):
    ev = NoisyAccuracy(trained, *heldout, draws=6, seed=0)
    levels = [weight_result.sigma * f for f in (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)]
    accs = [float(ev.correct(sigma=s).float().mean()) for s in levels]
    assert all(b <= a + 0.01 for a, b in itertools.pairwise(accs))
    assert accs[-1] < accs[0] - 0.2  # large noise really hurts
    # The search's own points are monotone too (same draws at every level).
    d = weight_result.drops
    assert all(b >= a - 0.01 for a, b in itertools.pairwise(d))


def test_same_seed_same_result_and_model_unchanged(trained, heldout, weight_result):
    trained.train()  # the calibration evaluates in eval mode and restores the flag
    snap = ModelSnapshot(trained)
    try:
        again = wrapgrad.calibrate(trained, heldout, perturber="weight", **FAST)
        assert snap.differences() == []
    finally:
        trained.eval()
    assert again.sigma == weight_result.sigma
    assert again.drops == weight_result.drops


def test_batchnorm_model_in_training_mode_is_left_exactly_as_it_was(heldout):
    net = train("small_resnet", "digits8x8", seed=0, epochs=2, limit=400, progress=False)
    assert net.test_accuracy > 0.3
    model = net.model.train()
    snap = ModelSnapshot(model)
    r = wrapgrad.calibrate(model, heldout, draws=2, max_samples=120, tol=0.02, progress=False)
    assert snap.differences() == []  # running statistics, flags, weights all untouched
    assert model.training
    assert r.sigma > 0


def test_dataloader_data_gives_the_same_result(trained, heldout, weight_result):
    loader = DataLoader(TensorDataset(*heldout), batch_size=50)
    r = wrapgrad.calibrate(trained, loader, perturber="weight", **FAST)
    assert r.sigma == weight_result.sigma


def test_input_calibration(trained, heldout):
    r = wrapgrad.calibrate(trained, heldout, perturber="input", target_drop=0.1, **FAST)
    assert r.perturber == "input"
    # alpha_SG is the record's noise_level (the enhancers' option name), never its sigma.
    assert r.noise_level > 0
    assert r.sigma is None
    assert r.level == r.noise_level
    assert "noise_level" in str(r)
    assert "sigma" not in str(r)
    assert r.drop_ci[0] <= 0.1 <= r.drop_ci[1]
    fresh = NoisyAccuracy(trained, *heldout, draws=24, seed=999)
    acc = float(fresh.correct(noise_level=r.noise_level).float().mean())
    drop = relative_drop(acc, r.acc_clean, 0.1)
    assert r.drop_ci[0] <= drop <= r.drop_ci[1]
    # The names before 0.1 still work, with a DeprecationWarning.
    with pytest.warns(DeprecationWarning, match="noise_level"):
        assert r.alpha == r.noise_level
    with pytest.warns(DeprecationWarning, match="noise_level"):
        old = fresh.correct(alpha=r.noise_level)
    assert torch.equal(old, fresh.correct(noise_level=r.noise_level))


def test_noisegrad_plus_plus_fixes_alpha_and_hits_the_joint_drop(trained, heldout, weight_result):
    r = wrapgrad.calibrate(trained, heldout, calibrator="noisegrad++", target_drop=0.1, **FAST)
    assert r.perturber == "fusion"
    assert r.noise_level == 0.1
    assert r.drop_ci[0] <= 0.1 <= r.drop_ci[1]
    # The joint drop at (noise_level, sigma) is the reported one, re-measured with the same draws.
    ev = NoisyAccuracy(trained, *heldout, draws=6, seed=0)
    acc = float(ev.correct(sigma=r.sigma, noise_level=0.1).float().mean())
    assert math.isclose(relative_drop(acc, r.acc_clean, 0.1), r.drop, abs_tol=1e-9)
    with pytest.warns(DeprecationWarning, match="alpha= is deprecated"):
        old = wrapgrad.calibrate(
            trained, heldout, calibrator="noisegrad++", target_drop=0.1, alpha=0.1, **FAST
        )
    assert old.sigma == r.sigma
    assert old.noise_level == 0.1


def test_halve_halves_both_calibrated_levels(trained, heldout):
    r = wrapgrad.calibrate(trained, heldout, calibrator="halve", **FAST)
    weight, inp = r.components
    assert weight.perturber == "weight"
    assert inp.perturber == "input"
    assert r.sigma == weight.sigma / 2
    assert r.noise_level == inp.noise_level / 2
    assert r.drop < max(weight.drop, inp.drop) + 0.05
    # The reported drop is the joint one at both halved levels (same draws), with its interval.
    fixed = wrapgrad.calibrate(trained, heldout, calibrator="halve", noise_level=0.2, **FAST)
    assert fixed.perturber == "fusion"
    assert fixed.noise_level == 0.1
    assert len(fixed.components) == 1
    assert fixed.sigma == weight.sigma / 2
    with pytest.warns(DeprecationWarning, match="input_alpha= is deprecated"):
        old = wrapgrad.calibrate(trained, heldout, calibrator="halve", input_alpha=0.2, **FAST)
    assert (old.sigma, old.noise_level) == (fixed.sigma, fixed.noise_level)
    ev = NoisyAccuracy(trained, *heldout, draws=6, seed=0)
    correct = ev.correct(sigma=fixed.sigma, noise_level=0.1)
    assert fixed.accuracy == float(correct.float().mean())
    assert math.isclose(
        fixed.drop, relative_drop(fixed.accuracy, fixed.acc_clean, 0.1), abs_tol=1e-9
    )
    assert fixed.drop_ci == drop_interval(correct, ev.clean(), 0.1, seed=0)


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, 0.0, 1.0, 1.5, -0.1])
def test_target_drop_outside_unit_interval(trained, heldout, bad):
    with pytest.raises(WrapgradValueError, match="target_drop"):
        wrapgrad.calibrate(trained, heldout, target_drop=bad, **FAST)


def test_target_drop_wrong_type(trained, heldout):
    with pytest.raises(WrapgradTypeError, match="target_drop"):
        wrapgrad.calibrate(trained, heldout, target_drop="5%", **FAST)


def test_empty_data(trained):
    with pytest.raises(WrapgradValueError, match="data"):
        wrapgrad.calibrate(trained, (torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(WrapgradValueError, match="data"):
        wrapgrad.calibrate(
            trained, DataLoader(TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0)))
        )


def test_model_at_chance_level(heldout):
    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(10))

        def forward(self, x):
            return self.bias.expand(x.shape[0], 10)

    with pytest.raises(WrapgradValueError, match="chance"):
        wrapgrad.calibrate(Constant(), heldout, **FAST)


def test_labels_outside_the_model_classes(trained, heldout):
    x, y = heldout
    y = y.clone()
    y[3] = 10
    with pytest.raises(WrapgradValueError, match=r"data: expected labels in \[0, 10\)"):
        wrapgrad.calibrate(trained, (x, y), **FAST)


def test_data_on_another_device(trained, heldout):
    x, y = heldout
    with pytest.raises(WrapgradValueError, match=r"data: .*device"):
        wrapgrad.calibrate(trained, (x.to("meta"), y), **FAST)


def test_unknown_perturber_and_calibrator(trained, heldout):
    with pytest.raises(WrapgradValueError, match="perturber"):
        wrapgrad.calibrate(trained, heldout, perturber="gradient", **FAST)
    with pytest.raises(UnknownNameError, match="calibrator"):
        wrapgrad.calibrate(trained, heldout, calibrator="acuracy_drop", **FAST)


class _OneWeight(nn.Module):
    """A model whose one parameter is a weight ``w = 1`` (what weight noise perturbs)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))


def test_insensitive_model_is_reported():
    class Insensitive(_OneWeight):
        """Its inputs are the logits; its one parameter does not change the prediction."""

        def forward(self, x):
            return x + 0.0 * self.w

    x = torch.randn(50, 3)
    y = x.argmax(dim=1)
    with pytest.raises(WrapgradValueError, match="never drops"):
        wrapgrad.calibrate(Insensitive(), (x, y), **FAST)


def test_steep_model_warns_and_reports_not_converged():
    class Step(_OneWeight):
        """All samples right while the noisy weight stays above 0.5, all wrong otherwise."""

        def forward(self, x):
            ok = (self.w > 0.5).float()
            return torch.stack([ok + 0 * x[:, 0], 1 - ok + 0 * x[:, 0]], dim=1)

    x = torch.rand(40, 1)
    y = torch.zeros(40, dtype=torch.long)
    with pytest.warns(WrapgradWarning, match="did not reach"):
        r = wrapgrad.calibrate(Step(), (x, y), draws=4, progress=False)
    assert not r.converged
    # With 4 draws the drop moves in steps of 1/4 of the way to chance: 0.05 is never hit.
    assert all(math.isclose(d * 4, round(d * 4), abs_tol=1e-9) for d in r.drops)


# -- the command line ------------------------------------------------------------------------------
def test_cli_prints_the_record_and_saves_the_curve(trained, tmp_path, monkeypatch, capsys):
    from wrapgrad.cli import main

    monkeypatch.setattr(wrapgrad_data, "pretrained", lambda *a, **k: trained)
    out = tmp_path / "curve.png"
    code = main(
        [
            "calibrate",
            "--model",
            "small_cnn",
            "--dataset",
            "digits8x8",
            "--draws",
            "4",
            "--curve-points",
            "3",
            "--out",
            str(out),
            "--json",
            str(tmp_path / "r.json"),
            "-q",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "sigma" in text
    assert "drop" in text
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import json

    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["draws"] == 4
    assert len(rec["levels"]) >= 5


# -- common random numbers, exact statistics of the heuristics --------------------------------------
class _Threshold(nn.Module):
    """Class 0 iff ``w * x[:, 0] > 0.5 * (x[:, 0] - x[:, 1])``; with ``w = 1`` and ``x = (1, 0)``
    a draw is right iff its noisy weight (or noisy ``x[:, 0]``) stays above 0.5."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        score = self.w * x[:, 0] - 0.5 * (x[:, 0] - x[:, 1])
        return torch.stack([score, torch.zeros_like(score)], dim=1)


@pytest.mark.parametrize("kind", ["sigma", "noise_level"])
def test_the_same_noise_draws_are_reused_at_every_level(kind):
    # Draw k at level s is right iff 1 + s * eps_k > 0.5: once a draw is wrong it stays wrong
    # at every larger level only if eps_k is the same draw at every level.
    x = torch.tensor([[1.0, 0.0]]).repeat(3, 1)
    y = torch.zeros(3, dtype=torch.long)
    ev = NoisyAccuracy(_Threshold(), x, y, draws=64, seed=7)
    levels = [0.05 * 1.25**i for i in range(20)]
    rows = [ev.correct(**{kind: s}) for s in levels]
    for a, b in itertools.pairwise(rows):
        assert not (b & ~a).any()
    assert bool(rows[0].all())
    assert 0.2 < float(rows[-1].float().mean()) < 0.8  # noise large enough to flip many draws


def test_measured_chance_is_the_accuracy_at_the_chance_level(trained, heldout):
    r = wrapgrad.calibrate(trained, heldout, chance="measured", chance_level=50.0, **FAST)
    ev = NoisyAccuracy(trained, *heldout, draws=6, seed=0)
    assert r.acc_chance == float(ev.correct(sigma=50.0).float().mean())
    d = relative_drop(r.accuracy, r.acc_clean, r.acc_chance)
    assert math.isclose(d, r.drop, abs_tol=1e-9)


def test_numpy_target_drop_is_accepted_and_nan_is_not():
    import numpy as np

    from wrapgrad.calibration import check_target_drop

    assert check_target_drop(np.float32(0.25)) == 0.25
    assert check_target_drop(np.float64(0.05)) == 0.05
    with pytest.raises(WrapgradValueError, match="target_drop"):
        check_target_drop(float("nan"))
    with pytest.raises(WrapgradTypeError, match="target_drop"):
        check_target_drop(True)
