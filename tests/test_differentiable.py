"""Differentiable enhanced maps (``create_graph=True``, issue 12): the graph runs from SmoothGrad,
NoiseGrad and FusionGrad maps back to the inputs (through ``x + ξ``) and to the parameters
(through ``Ŵ ⊙ η``, evaluated with ``functional_call`` on non-detached tensors); gradcheck in
double precision with a fixed seed (the same draws at every evaluation)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from wrapgrad_noise.enhancers import FusionGrad, NoiseGrad, SmoothGrad
from wrapgrad_noise.perturbers import InputGaussian, WeightMultiplicative

import wrapgrad
from wrapgrad.engine import monte_carlo
from wrapgrad.errors import WrapgradValueError
from wrapgrad.records import ExplainerTraits


class DiffSaliency:
    """A tiny differentiable explainer: the signed gradient of the target logit, with the graph
    kept when asked (``create_graph=True``)."""

    traits = ExplainerTraits(
        name="diff_saliency", requires_grad_inputs=True, vmap_layout="block", differentiable=True
    )

    def __call__(self, model, inputs, target=None, create_graph=False, **kwargs):  # type: ignore[no-untyped-def]
        out = model(inputs)
        (g,) = torch.autograd.grad(out[:, target].sum(), inputs, create_graph=create_graph)
        return g


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double().eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def test_smoothgrad_map_passes_gradcheck_wrt_the_inputs(x: torch.Tensor) -> None:
    model = tiny()
    before = [p.detach().clone() for p in model.parameters()]

    def smoothgrad(inp: torch.Tensor) -> torch.Tensor:
        return monte_carlo(
            DiffSaliency(), model, inp, 1, input_sampler=InputGaussian(noise_level=0.1),
            n_inputs=3, seed=0, create_graph=True, max_batch=4,
        )  # fmt: skip

    xg = x.clone().requires_grad_()
    out = smoothgrad(xg)
    assert out.requires_grad  # connected to x through x + ξ
    assert torch.autograd.gradcheck(smoothgrad, (xg,), eps=1e-6, atol=1e-5)
    # Without create_graph the same map carries no graph and equals the detached one.
    plain = monte_carlo(
        DiffSaliency(), model, xg, 1, input_sampler=InputGaussian(noise_level=0.1),
        n_inputs=3, seed=0, max_batch=4,
    )  # fmt: skip
    assert not plain.requires_grad
    torch.testing.assert_close(plain, out.detach())
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.detach(), b)


class Explained(nn.Module):
    """An enhanced map as a module of the model's parameters, so that ``functional_call`` can
    hand the engine other parameter tensors (what gradcheck perturbs)."""

    def __init__(self, model: nn.Module, enhancer: object) -> None:
        super().__init__()
        self.model = model
        self.enhancer = enhancer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.enhancer(DiffSaliency(), self.model, x, 1)  # type: ignore[operator]


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_noisegrad_map_passes_gradcheck_wrt_a_parameter(x: torch.Tensor, strategy: str) -> None:
    model = tiny()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    explained = Explained(
        model, NoiseGrad(n_samples=3, sigma=0.2, seed=0, create_graph=True, strategy=strategy)
    )

    def noisegrad(w: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(explained, {"model.0.weight": w}, (x,))

    w = model[0].weight.detach().clone().requires_grad_()
    out = noisegrad(w)
    assert out.requires_grad  # connected to W through W ⊙ η
    assert torch.autograd.gradcheck(noisegrad, (w,), eps=1e-6, atol=1e-5)
    # The same map without the override is the model's own, with a graph to its parameters.
    own = explained(x)
    torch.testing.assert_close(own, out.detach())
    # (the output bias does not enter a gradient with respect to the inputs)
    used = [p for n, p in model.named_parameters() if n != "2.bias"]
    grads = torch.autograd.grad(own.square().sum(), used)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n])
        assert p.grad is None


def test_fusiongrad_and_vargrad_keep_the_graph_to_inputs_and_parameters(x: torch.Tensor) -> None:
    model = tiny()
    xg = x.clone().requires_grad_()
    for enhancer in (
        FusionGrad(n_models=2, n_samples=2, seed=0, create_graph=True),
        SmoothGrad(n_samples=3, seed=0, create_graph=True, aggregate="variance"),
        SmoothGrad(n_samples=3, seed=0, create_graph=True, abs_per_sample=True),
    ):
        out = enhancer(DiffSaliency(), model, xg, 0)
        gx, gw = torch.autograd.grad(out.sum(), [xg, model[2].weight])
        assert gx.abs().sum() > 0
        assert gw.abs().sum() > 0


def test_wrap_create_graph_option(x: torch.Tensor) -> None:
    model = tiny()
    xg = x.clone().requires_grad_()
    # The explainer takes create_graph too: say that the enhancer gets it (it passes it on).
    explain = wrapgrad.wrap(
        model, DiffSaliency(), "smoothgrad", n_samples=2, seed=0,
        enhancer_options={"create_graph": True},
    )  # fmt: skip
    out = explain(xg, target=1)
    (g,) = torch.autograd.grad(out.sum(), xg)
    assert torch.isfinite(g).all()
    # Zero noise with create_graph: the base map, still differentiable.
    zero = wrapgrad.wrap(
        model, DiffSaliency(), "smoothgrad", noise_level=0.0,
        enhancer_options={"create_graph": True},
    )(xg, target=1)  # fmt: skip
    assert zero.requires_grad
    torch.testing.assert_close(zero, DiffSaliency()(model, xg, 1, create_graph=True))


def test_create_graph_needs_a_differentiable_method(x: torch.Tensor) -> None:
    model = tiny().float()
    # wrap() refuses a method without a differentiable kernel when it is built ...
    with pytest.raises(WrapgradValueError, match=r"create_graph: 'deep_lift' cannot keep a graph"):
        wrapgrad.wrap(model, "deep_lift", "noisegrad", n_samples=2, create_graph=True)
    # ... and the engine refuses an explainer whose traits are not differentiable.
    explain = wrapgrad.wrap(
        model, "saliency", "noisegrad", n_samples=2, enhancer_options={"create_graph": True}
    )
    with pytest.raises(WrapgradValueError, match=r"create_graph: .* not differentiable"):
        explain(x.float(), target=0)
    with pytest.raises(WrapgradValueError, match="create_graph"):
        monte_carlo(
            lambda m, i, t, **kw: i, model, x.float(), None,
            weight_sampler=WeightMultiplicative(0.1), create_graph=True,
        )  # fmt: skip
