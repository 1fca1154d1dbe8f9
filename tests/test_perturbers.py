"""Perturbers of the noise plugin: input Gaussian noise (Eq. 4) and multiplicative weight noise."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from wrapgrad_noise.kernels import per_sample_sigma, select_parameters
from wrapgrad_noise.perturbers import InputGaussian, WeightMultiplicative

from tests.conftest import SmallCNN
from wrapgrad.engine import RunningMoments
from wrapgrad.errors import WrapgradTypeError, WrapgradValueError
from wrapgrad.protocols import Perturber
from wrapgrad.registry import get_registry


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registered_with_targets() -> None:
    reg = get_registry()
    assert reg.get("perturber", "input_gaussian").target == "input"
    assert reg.get("perturber", "weight_multiplicative").target == "weight"
    assert isinstance(InputGaussian(), Perturber)
    assert isinstance(WeightMultiplicative(), Perturber)


def test_input_sigma_is_relative_to_each_sample_range() -> None:
    # Sample 0 spans [0, 1], sample 1 spans [-5, 5]: σ = α · range per sample (Eq. 4).
    x = torch.stack([torch.linspace(0, 1, 5000), torch.linspace(-5, 5, 5000)])
    noisy = InputGaussian(noise_level=0.1).sample(x, 40, generator=gen())
    assert noisy.shape == (40, 2, 5000)
    std = (noisy - x).std(dim=(0, 2))
    torch.testing.assert_close(std, torch.tensor([0.1, 1.0]), rtol=0.02, atol=0)
    torch.testing.assert_close(per_sample_sigma(x, 0.1).flatten(), torch.tensor([0.1, 1.0]))


def test_absolute_input_sigma_overrides_noise_level() -> None:
    x = torch.zeros(3, 4000)
    noisy = InputGaussian(noise_level=0.9, input_sigma=0.5).sample(x, 10, generator=gen())
    assert abs(float(noisy.std()) - 0.5) < 0.01
    assert abs(float(noisy.mean())) < 0.01


def test_weight_noise_is_multiplicative_with_unit_mean() -> None:
    w = torch.full((200, 100), 2.0)
    s = WeightMultiplicative(sigma=0.3).sample(w, 20, generator=gen())
    eta = s / w
    assert s.shape == (20, 200, 100)
    assert abs(float(eta.mean()) - 1.0) < 0.01
    assert abs(float(eta.std()) - 0.3) < 0.01


def test_zero_noise_gives_exact_copies() -> None:
    x = torch.randn(3, 7)
    assert torch.equal(InputGaussian(noise_level=0.0).sample(x, 4, generator=gen())[2], x)
    assert torch.equal(WeightMultiplicative(sigma=0.0).sample(x, 4)[3], x)


def test_sample_parameters_stacks_without_touching_the_model() -> None:
    model = SmallCNN()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    p = WeightMultiplicative(sigma=0.1)
    a = p.sample_parameters(model, 3, generator=gen(1))
    b = p.sample_parameters(model, 3, generator=gen(1))
    assert list(a) == [n for n, _ in model.named_parameters()]
    for name, w in model.named_parameters():
        assert a[name].shape == (3, *w.shape)
        assert torch.equal(a[name], b[name])
        assert not torch.equal(a[name][0], a[name][1])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    out = torch.func.functional_call(
        model, {k: v[0] for k, v in a.items()}, (torch.ones(1, 1, 8, 8),)
    )
    assert out.shape == (1, 4)


def test_parameter_selection_by_pattern_regex_and_type() -> None:
    model = SmallCNN()
    assert select_parameters(model, include="features.*") == [
        "features.0.weight",
        "features.0.bias",
        "features.2.weight",
        "features.2.bias",
    ]
    assert select_parameters(model, include="re:.*\\.bias", exclude="classifier.*") == [
        "features.0.bias",
        "features.2.bias",
    ]
    assert select_parameters(model, module_types=nn.Linear) == [
        "classifier.0.weight",
        "classifier.0.bias",
        "classifier.2.weight",
        "classifier.2.bias",
    ]
    p = WeightMultiplicative(sigma=0.1, include="*.weight", module_types=nn.Conv2d)
    assert list(p.sample_parameters(model, 2, generator=gen())) == [
        "features.0.weight",
        "features.2.weight",
    ]


def test_pattern_matching_nothing_names_the_option() -> None:
    with pytest.raises(WrapgradValueError, match=r"include: the pattern 'encoder\.\*'"):
        WeightMultiplicative(include="encoder.*").parameter_names(SmallCNN())
    with pytest.raises(WrapgradValueError, match="module_types"):
        select_parameters(SmallCNN(), module_types=nn.LSTM)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"noise_level": -0.1}, WrapgradValueError, "noise_level"),
        ({"input_sigma": -1.0}, WrapgradValueError, "input_sigma"),
        ({"noise_level": "high"}, WrapgradTypeError, "noise_level"),
    ],
)
def test_bad_input_noise_options(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        InputGaussian(**kwargs)


def test_bad_weight_noise_options() -> None:
    with pytest.raises(WrapgradValueError, match="sigma"):
        WeightMultiplicative(sigma=-0.2)
    with pytest.raises(WrapgradValueError, match="calibration"):
        WeightMultiplicative(sigma="auto")  # type: ignore[arg-type]
    with pytest.raises(WrapgradValueError, match="n: expected an integer >= 1"):
        WeightMultiplicative().sample(torch.ones(2), 0)


@settings(max_examples=20, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    n=st.integers(1, 4),
    seed=st.integers(0, 2**31),
)
def test_same_generator_state_same_draws(shape: list[int], n: int, seed: int) -> None:
    x = torch.randn(shape, generator=gen(seed))
    for p in (InputGaussian(noise_level=0.2), WeightMultiplicative(sigma=0.2)):
        a = p.sample(x, n, generator=gen(seed))
        b = p.sample(x, n, generator=gen(seed))
        assert a.shape == (n, *x.shape)
        assert torch.equal(a, b)


@settings(max_examples=20, deadline=None)
@given(sizes=st.lists(st.integers(1, 5), min_size=1, max_size=5), seed=st.integers(0, 1000))
def test_running_moments_match_batch_statistics(sizes: list[int], seed: int) -> None:
    data = torch.randn(sum(sizes), 3, generator=gen(seed), dtype=torch.float64)
    m = RunningMoments(track_square=True, track_variance=True)
    for chunk in torch.split(data, sizes):
        m.update(chunk)
    torch.testing.assert_close(m.result("mean"), data.mean(0))
    torch.testing.assert_close(m.result("mean_square"), (data**2).mean(0))
    if data.shape[0] > 1:
        torch.testing.assert_close(m.result("variance"), data.var(0, unbiased=True))


def test_running_variance_is_stable_far_from_zero() -> None:
    # Maps of 1e4 ± 1e-2 in float32: the naive E[x²] − E[x]² loses every digit (float32 keeps
    # ~7 of 1e8); the chunked Welford/Chan update keeps the variance to a few per cent.
    data64 = 1e4 + 1e-2 * torch.randn(200, 5, generator=gen(0), dtype=torch.float64)
    m = RunningMoments(track_variance=True)
    for chunk in torch.split(data64.float(), 7):
        m.update(chunk)
    torch.testing.assert_close(m.result("variance").double(), data64.var(0), rtol=0.05, atol=0)
