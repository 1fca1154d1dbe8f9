"""DeepLIFT's differentiable Rescale map (wrapgrad_metrics.rescale), the surrogate of S_r and
IFIA for ``deep_lift``: it equals Captum's DeepLift map, its input gradient is the map's true
derivative, and S_r driven by it finds larger changes than its random start."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from wrapgrad_metrics.rescale import deep_lift_rescale
from wrapgrad_metrics.surrogate import ascent_forward, make_surrogate

import wrapgrad
from wrapgrad.registry import get_registry

from ._trained import state_of, unchanged

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _resnet(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_registry().get("model", "small_resnet").factory(in_channels=3, num_classes=10)
        # Non-trivial BatchNorm statistics, so that references are not all zero inside.
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


@pytest.mark.parametrize("baselines", [0.0, 0.25])
def test_rescale_equals_captums_deeplift_on_small_resnet(baselines: float) -> None:
    model = _resnet()
    before = state_of(model)
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 3, 7, 9])
    explain = wrapgrad.wrap(model, "deep_lift", baselines=baselines)
    want = explain(x, target=t)
    surrogate = make_surrogate(explain)
    assert surrogate is not None
    assert ascent_forward(model, 10.0, surrogate) is model  # no softplus twin needed
    got = surrogate(model, x.clone().requires_grad_(True), t)
    assert got.requires_grad
    assert torch.allclose(got.detach(), want, rtol=1e-4, atol=1e-6)
    # the map is not a gradient map: it differs from Input x Gradient on this network
    ixg = wrapgrad.wrap(model, "input_x_gradient")(x, target=t)
    assert not torch.allclose(ixg, want, rtol=1e-3, atol=1e-5)
    assert unchanged(model, before)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(5, 6)
        self.b = nn.Linear(6, 3)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.relu(self.a(x)))


def test_rescale_input_gradient_matches_finite_differences() -> None:
    model = _Tiny().double()
    x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([0, 1, 2])
    # references on both sides of zero: a non-constant multiplier in some units
    base = torch.randn(1, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5))

    def fn(z: torch.Tensor) -> torch.Tensor:
        return deep_lift_rescale(model, z, t, baselines=base)

    z = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (z,), eps=1e-6, atol=1e-6)
    # ... and the gradient is not zero (unlike a ReLU network's gradient map)
    (g,) = torch.autograd.grad(fn(z).pow(2).sum(), z)
    assert bool((g.abs() > 1e-8).any())


def test_inplace_relu_and_detached_map() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Linear(4, 2))
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    want = wrapgrad.wrap(net, "deep_lift")(x, target=1)
    got = deep_lift_rescale(net, x, 1, create_graph=False)
    assert not got.requires_grad
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)


def test_sensitivity_of_deeplift_follows_the_rescale_surrogate() -> None:
    model = _resnet(seed=2)
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    t = model(x).argmax(1)
    explain = wrapgrad.wrap(model, "deep_lift")
    kw = {"r": 0.03, "restarts": 1, "seed": 0, "bounds": (0.0, 1.0)}
    start_only = wrapgrad.metric("sensitivity", steps=1, step_size=1e-12, **kw)
    ascent = wrapgrad.metric("sensitivity", steps=4, **kw)
    s0 = start_only(model, x, t, explain)
    s = ascent(model, x, t, explain)
    assert bool((s >= s0).all())
    assert bool((s > s0).any()), (s, s0)


def test_sensitivity_gradient_in_chunks_is_the_same_ascent() -> None:
    model = _resnet(seed=1)
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    t = model(x).argmax(1)
    explain = wrapgrad.wrap(model, "integrated_gradients", n_steps=4)
    kw = {"r": 0.03, "steps": 2, "restarts": 1, "seed": 0, "bounds": (0.0, 1.0)}
    whole = wrapgrad.metric("sensitivity", gradient_batch=None, **kw)(model, x, t, explain)
    chunked = wrapgrad.metric("sensitivity", gradient_batch=2, **kw)(model, x, t, explain)
    assert torch.allclose(whole, chunked, rtol=1e-5, atol=1e-7)
    with pytest.raises(wrapgrad.errors.WrapgradValueError, match=r"^gradient_batch"):
        wrapgrad.metric("sensitivity", gradient_batch=0)


def test_sensitivity_takes_the_maps_at_the_inputs_from_explain_once() -> None:
    model = _resnet(seed=1)
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    t = model(x).argmax(1)
    explain = wrapgrad.wrap(model, "saliency")
    seen: list[torch.Tensor] = []

    def counting(inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        seen.append(inputs)
        return explain(inputs, target=target)

    counting.explainer = explain.explainer  # type: ignore[attr-defined]
    counting.model = model  # type: ignore[attr-defined]
    wrapgrad.metric("sensitivity", r=0.03, steps=2, restarts=1)(model, x, t, counting)
    assert seen[0] is x  # A(x) asked for with the caller's very tensor (a cache can serve it)
    assert all(z is not x for z in seen[1:])
    assert len(seen) == 1 + 1 + 2  # A(x), the start, one per step


def test_a_raising_call_leaves_the_model_and_relu_as_they_were() -> None:
    """A target the model does not have raises an error naming ``target``; the model is bitwise
    unchanged and ReLU is plain ReLU again afterwards (the Rescale mode was left)."""
    model = _resnet()
    before = state_of(model)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with pytest.raises(wrapgrad.errors.WrapgradError, match="target"):
        deep_lift_rescale(model, x, 10)
    assert unchanged(model, before)
    z = torch.tensor([-1.0, 0.5, 2.0], requires_grad=True)
    (g,) = torch.autograd.grad(torch.relu(z * 1.0).sum(), z)
    assert torch.equal(g, torch.tensor([0.0, 1.0, 1.0]))
