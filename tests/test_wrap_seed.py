"""``wrap(model, method, seed=...)`` without an enhancer, for methods that draw random numbers
themselves (Lime, KernelShap, GradientShap, ...): the seed makes the maps repeat, and the
caller's global RNG states (torch's, NumPy's, Python's) are as before, as inside an enhancer;
without a seed they draw from the global RNGs as Captum's own calls do."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import wrapgrad
from wrapgrad.errors import WrapgradTypeError, WrapgradValueError

from .conftest import SmallCNN

STOCHASTIC = [
    ("lime", {"n_samples": 8}),
    ("kernel_shap", {"n_samples": 8}),
    ("gradient_shap", {"baselines": torch.zeros(2, 1, 8, 8), "n_samples": 2}),
    ("shapley_value_sampling", {"n_samples": 1}),
]


def _states() -> tuple:
    return torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def _same(a: tuple, b: tuple) -> bool:
    return torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


@pytest.fixture
def model_and_inputs():
    model = SmallCNN().eval()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return model, x


@pytest.mark.parametrize(("method", "options"), STOCHASTIC, ids=[m for m, _ in STOCHASTIC])
def test_a_seed_repeats_the_maps_and_leaves_every_global_rng_as_it_was(
    method, options, model_and_inputs
) -> None:
    model, x = model_and_inputs
    before = _states()
    a = wrapgrad.wrap(model, method, seed=3, **options)(x, target=1)
    assert _same(before, _states())
    b = wrapgrad.wrap(model, method, seed=3, **options)(x, target=1)
    c = wrapgrad.wrap(model, method, seed=4, **options)(x, target=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_without_a_seed_the_method_draws_from_the_global_rngs_as_from_captum(
    model_and_inputs,
) -> None:
    from captum.attr import Lime

    model, x = model_and_inputs
    explain = wrapgrad.wrap(model, "lime", n_samples=8)
    torch.manual_seed(0)
    np.random.seed(0)
    a = explain(x, target=1)
    torch.manual_seed(0)
    np.random.seed(0)
    b = Lime(model).attribute(x, target=1, n_samples=8)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(explain(x, target=1), explain(x, target=1))  # fresh draws


def test_seed_for_a_method_that_draws_nothing_is_refused_naming_it(model_and_inputs) -> None:
    model, _ = model_and_inputs
    with pytest.raises(WrapgradValueError, match=r"seed: saliency draws no random numbers"):
        wrapgrad.wrap(model, "saliency", seed=0)
    with pytest.raises(WrapgradTypeError, match="seed"):
        wrapgrad.wrap(model, "lime", seed="0")


def test_with_an_enhancer_seed_stays_the_enhancers(model_and_inputs) -> None:
    model, x = model_and_inputs
    explain = wrapgrad.wrap(model, "saliency", enhancer="smoothgrad", n_samples=2, seed=5)
    assert explain.enhancer.seed == 5
    assert explain.seed is None
    assert torch.equal(explain(x, target=1), explain(x, target=1))


def test_a_callable_that_takes_any_option_gets_seed_as_before(model_and_inputs) -> None:
    model, x = model_and_inputs
    seen = {}

    def method(model, inputs, target=None, **kw):
        seen.update(kw)
        return inputs * 0

    wrapgrad.wrap(model, method, seed=3)(x, target=1)
    assert seen == {"seed": 3}


def test_a_seeded_call_and_a_raising_one_leave_the_model_bitwise_unchanged(
    model_and_inputs,
) -> None:
    from ._trained import state_of, unchanged

    model, x = model_and_inputs
    before, rng = state_of(model), _states()
    explain = wrapgrad.wrap(model, "lime", n_samples=8, seed=1)
    explain(x, target=1)
    with pytest.raises(WrapgradValueError, match="target"):
        explain(x, target=99)
    assert unchanged(model, before)
    assert _same(rng, _states())
