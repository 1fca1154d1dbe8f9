"""``sigma="auto"`` / ``noise_level="auto"`` in ``wrap()``: calibrated noise levels."""

from __future__ import annotations

import pytest
import torch

import wrapgrad
from wrapgrad.errors import WrapgradValueError

FAST = {"draws": 4, "progress": False, "seed": 0}


@pytest.fixture(scope="module")
def trained():
    from wrapgrad_data import train

    return train("small_cnn", "digits8x8", seed=0, epochs=4, progress=False).model


@pytest.fixture(scope="module")
def heldout():
    from wrapgrad_data import load_dataset

    x, y = load_dataset("digits8x8", split="test").tensors()
    return x[:200], y[:200]


def _calibrated(model, data, enhancer: str, **options):
    """Saliency under ``enhancer``, its ``"auto"`` levels calibrated on ``data`` (FAST)."""
    return wrapgrad.wrap(
        model,
        "saliency",
        enhancer=enhancer,
        calibration=data,
        calibration_options=FAST,
        **options,
    )


def test_noisegrad_auto_sigma_is_the_calibrated_one(trained, heldout) -> None:
    explain = _calibrated(trained, heldout, "noisegrad", sigma="auto", n_samples=4, seed=0)
    record = explain.calibration
    assert record.perturber == "weight"
    assert explain.enhancer.weight_noise.sigma == record.sigma > 0
    direct = wrapgrad.calibrate(trained, heldout, perturber="weight", **FAST)
    assert direct.sigma == record.sigma
    x, y = heldout
    maps = explain(x[:4], target=y[:4])
    assert maps.shape == x[:4].shape
    assert torch.isfinite(maps).all()


def test_smoothgrad_auto_noise_level_and_fusiongrad_halves_both(trained, heldout) -> None:
    sg = _calibrated(trained, heldout, "smoothgrad", noise_level="auto")
    assert sg.calibration.perturber == "input"
    assert sg.enhancer.input_noise.noise_level == sg.calibration.noise_level > 0
    assert sg.calibration.sigma is None  # sigma is only ever the weight level
    fg = _calibrated(trained, heldout, "fusiongrad", sigma="auto", noise_level="auto")
    assert fg.calibration.calibrator == "halve"
    assert fg.enhancer.weight_noise.sigma == fg.calibration.sigma
    assert fg.enhancer.input_noise.noise_level == fg.calibration.noise_level
    ng_sigma = wrapgrad.calibrate(trained, heldout, perturber="weight", **FAST).sigma
    assert fg.calibration.sigma == pytest.approx(ng_sigma / 2, rel=0.25)


def test_auto_without_data_or_data_without_auto_is_refused(trained, heldout) -> None:
    with pytest.raises(WrapgradValueError, match=r"sigma: .*needs calibration data"):
        wrapgrad.wrap(trained, "saliency", enhancer="noisegrad", sigma="auto")
    with pytest.raises(WrapgradValueError, match=r"calibration: data is used only"):
        wrapgrad.wrap(trained, "saliency", enhancer="noisegrad", sigma=0.1, calibration=heldout)
    with pytest.raises(WrapgradValueError, match=r"n_samples: 'auto' applies to the noise levels"):
        wrapgrad.wrap(
            trained, "saliency", enhancer="noisegrad", n_samples="auto", calibration=heldout
        )


class _OldRecord:
    """A third-party calibrator's record in the form before 0.1: alpha_SG in ``sigma`` for an
    input calibration, ``alpha`` beside a weight ``sigma`` for a joint one."""

    def __init__(self, perturber: str, sigma: float, alpha: float | None = None) -> None:
        self.perturber, self.sigma, self.alpha, self.drop = perturber, sigma, alpha, 0.05


def test_records_in_the_old_form_are_read_with_a_deprecation_warning() -> None:
    from wrapgrad.calibration import levels_of

    with pytest.warns(DeprecationWarning, match="noise_level"):
        assert levels_of(_OldRecord("input", 0.07)) == {"weight": None, "input": 0.07}
    with pytest.warns(DeprecationWarning, match="noise_level"):
        assert levels_of(_OldRecord("fusion", 0.03, 0.05)) == {"weight": 0.03, "input": 0.05}
    assert levels_of(_OldRecord("weight", 0.06)) == {"weight": 0.06, "input": None}
