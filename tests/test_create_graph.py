"""``wrap(..., create_graph=True)``: maps a loss can be backpropagated through, plain and enhanced."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients
from torch import nn

import wrapgrad
from wrapgrad.errors import WrapgradValueError
from wrapgrad.guard import ModelSnapshot


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double().eval()


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "integrated_gradients"])
def test_plain_maps_keep_a_graph_and_match_captum_values(method) -> None:
    model = _net()
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    options = {"n_steps": 8} if method == "integrated_gradients" else {}
    maps = wrapgrad.wrap(model, method, create_graph=True, **options)(x, target=1)
    plain = wrapgrad.wrap(model, method, **options)(x.detach(), target=1)
    torch.testing.assert_close(maps.detach(), plain)
    assert maps.requires_grad
    (g,) = torch.autograd.grad(maps.pow(2).sum(), x)
    assert torch.isfinite(g).all()
    assert g.abs().sum() > 0


@pytest.mark.parametrize(
    ("enhancer", "options"),
    [
        ("smoothgrad", {"noise_level": 0.1}),
        ("noisegrad", {"sigma": 0.1}),
        ("fusiongrad", {"sigma": 0.1, "noise_level": 0.1, "n_models": 2}),
    ],
)
def test_gradcheck_through_enhanced_maps(enhancer, options) -> None:
    model = _net()
    snap = ModelSnapshot(model)
    explain = wrapgrad.wrap(
        model, "saliency", enhancer, create_graph=True, abs=False, n_samples=3, seed=0, **options
    )
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    # The seed fixes every draw, so the enhanced map is a deterministic function of x.
    assert torch.autograd.gradcheck(lambda inp: explain(inp, target=2), (x,), eps=1e-6, atol=1e-5)
    assert snap.differences() == []


def test_parameters_receive_gradients_from_a_loss_on_noisegrad_maps() -> None:
    model = _net()
    explain = wrapgrad.wrap(
        model,
        "integrated_gradients",
        "noisegrad",
        create_graph=True,
        n_steps=4,
        n_samples=2,
        sigma=0.1,
        seed=0,
    )
    x = torch.randn(2, 4, dtype=torch.float64)
    loss = explain(x, target=0).abs().sum()
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_create_graph_bad_input_names_the_argument() -> None:
    model = _net()
    with pytest.raises(
        WrapgradValueError,
        match=r"^create_graph: 'deep_lift' cannot keep a graph; methods that can: input_x_gradient, integrated_gradients, saliency",
    ):
        wrapgrad.wrap(model, "deep_lift", create_graph=True)
    with pytest.raises(WrapgradValueError, match=r"^create_graph: layer methods"):
        wrapgrad.wrap(model, "layer_grad_cam", layer="0", create_graph=True)

    def plain_explainer(model, inputs, target=None):
        return inputs

    with pytest.raises(
        WrapgradValueError, match=r"^create_graph: the explainer .*differentiable=True"
    ):
        wrapgrad.wrap(model, plain_explainer, create_graph=True)
    # Captum classes map to their kernels too.
    x = torch.randn(2, 4, dtype=torch.float64)
    out = wrapgrad.wrap(model, IntegratedGradients, create_graph=True, n_steps=4)(x, target=0)
    assert out.requires_grad
