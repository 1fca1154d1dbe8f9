"""What each component of the example plugin computes, on hand-checkable cases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from wrapgrad_example_plugin import (
    CosineSimilarity,
    GradientXSign,
    LaplaceInput,
    LaplaceSmoothGrad,
    RelevanceMass,
    load_bars,
)

import wrapgrad
from wrapgrad.guard import ModelSnapshot


def test_laplace_noise_has_the_gaussians_std_and_laplace_tails() -> None:
    x = torch.tensor([[0.0, 2.0]]).expand(1, 2)  # range 2: sigma = 0.1 * 2 = 0.2
    draws = LaplaceInput(noise_level=0.1).sample(
        x, 100_000, generator=torch.Generator().manual_seed(0)
    )
    xi = (draws - x).flatten()
    assert xi.std().item() == pytest.approx(0.2, rel=0.02)
    z = (xi - xi.mean()) / xi.std()
    assert (z**4).mean().item() == pytest.approx(6.0, rel=0.1)  # Laplace kurtosis 6 (Gaussian: 3)
    assert xi.abs().mean().item() == pytest.approx(0.2 / math.sqrt(2), rel=0.02)  # E|xi| = b


def test_laplace_smoothgrad_of_gradient_x_input_on_a_linear_model_is_unbiased() -> None:
    model = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 3.0], [0.0, 1.0, 1.0, 1.0]]))
    x = torch.tensor([[1.0, 0.0, -1.0, 2.0]])

    def grad_x_input(m, inputs, target=None, **kw):  # type: ignore[no-untyped-def]
        z = inputs.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(m(z)[:, 0].sum(), z)
        return g * inputs  # w * (x + xi) for the linear model

    snapshot = ModelSnapshot(model)
    out = LaplaceSmoothGrad(n_samples=4000, noise_level=0.5, seed=0)(
        grad_x_input, model, x, target=torch.tensor([0])
    )
    assert snapshot.differences() == []
    # E[w (x + xi)] = w x; the sample mean's std is w * sigma / sqrt(N), sigma = 0.5 * 3.
    tol = 4 * model.weight[0].abs() * 1.5 / math.sqrt(4000)
    assert ((out[0] - model.weight[0] * x[0]).abs() <= tol).all()


def test_laplace_smoothgrad_through_wrap(registry) -> None:  # type: ignore[no-untyped-def]
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).eval()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    explain = wrapgrad.wrap(
        model,
        "saliency",
        enhancer="laplace_smoothgrad",
        noise_level=0.1,
        n_samples=3,
        seed=0,
        guard="verify",
    )
    a, b = explain(x, target=1), explain(x, target=1)
    assert a.shape == x.shape
    assert torch.equal(a, b)
    # Zero noise is the plain method.
    plain = wrapgrad.wrap(model, "saliency")(x, target=1)
    zero = wrapgrad.wrap(
        model, "saliency", enhancer="laplace_smoothgrad", noise_level=0.0, n_samples=2
    )
    torch.testing.assert_close(zero(x, target=1), plain)


def test_cosine_similarity_by_hand() -> None:
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    b = torch.tensor([[4.0, 3.0], [0.0, 5.0]])
    torch.testing.assert_close(
        CosineSimilarity()(a, b), torch.tensor([24 / 25, 0.0], dtype=torch.float64)
    )


def test_relevance_mass_by_hand_and_against_quantus() -> None:
    maps = torch.tensor([[[[2.0, -5.0], [1.0, 1.0]]], [[[-1.0, -1.0], [-1.0, -1.0]]]])
    mask = torch.tensor([[[[True, True], [False, False]]]]).expand(2, 1, 2, 2)
    # Positive relevance 2 + 1 + 1 = 4, of which 2 inside; no positive relevance -> 0.
    torch.testing.assert_close(
        RelevanceMass()(maps, mask), torch.tensor([0.5, 0.0], dtype=torch.float64)
    )
    # On non-negative maps it is Quantus' RelevanceMassAccuracy.
    g = torch.Generator().manual_seed(0)
    pos, m = torch.rand(3, 1, 8, 8, generator=g), torch.rand(3, 1, 8, 8, generator=g) > 0.6
    quantus = wrapgrad.metric("quantus_relevance_mass_accuracy")
    torch.testing.assert_close(RelevanceMass()(pos, m), quantus(pos, m).double())


def test_bars_images_masks_and_splits() -> None:
    train, test, every = load_bars("train", n=40), load_bars("test", n=40), load_bars("all", n=40)
    assert (len(train), len(test), len(every)) == (30, 10, 40)
    assert torch.equal(torch.cat([test.inputs, train.inputs]), every.inputs)  # disjoint parts
    bar = every.masks["bar"][:, 0]
    horizontal = bar.all(dim=2).any(dim=1)  # a full row
    vertical = bar.all(dim=1).any(dim=1)  # a full column
    assert torch.equal(horizontal, every.labels == 0)
    assert torch.equal(vertical, every.labels == 1)
    assert (every.inputs[every.masks["bar"]] == 1).all()
    assert (every.inputs[~every.masks["bar"]] < 0.3).all()
    assert torch.equal(load_bars("all", n=40, seed=0).inputs, every.inputs)
    assert not torch.equal(load_bars("all", n=40, seed=1).inputs, every.inputs)


def test_gradient_x_sign_matches_saliency_times_sign(registry) -> None:  # type: ignore[no-untyped-def]
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    got = wrapgrad.wrap(model, "gradient_x_sign", guard="verify")(x, target=0)
    saliency = wrapgrad.wrap(model, "saliency")(x, target=0, abs=False)
    torch.testing.assert_close(got, saliency * x.sign())
    assert GradientXSign.traits.differentiable
