"""Differentiable attribution kernels (wrapgrad.differentiable) and FAR's ReLU trick."""

from __future__ import annotations

import captum.attr as ca
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import wrapgrad
from wrapgrad.differentiable import (
    IG_METHODS,
    DifferentiableExplainer,
    FarReLUMode,
    check_differentiable,
    differentiable_explainer,
    far_relu,
    input_x_gradient,
    integrated_gradients,
    integration_rule,
    saliency,
)
from wrapgrad.errors import UnknownNameError, WrapgradTypeError, WrapgradValueError
from wrapgrad.records import traits_of

from ._trained import state_of, unchanged


def relu_cnn(dtype: torch.dtype = torch.float64) -> nn.Module:
    """ReLUs written as an in-place module, a module and inside max-pooling."""
    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(4 * 4 * 4, 8),
            nn.ReLU(),
            nn.Linear(8, 3),
        )
        .to(dtype)
        .eval()
    )


class EveryRelu(nn.Module):
    """ReLU written every way torch offers (function, method, in place, result ignored)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.l1, self.l2, self.l3, self.l4, self.l5 = (nn.Linear(5, 5) for _ in range(5))
        self.act = nn.ReLU(inplace=True)
        self.out = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.l1(x))
        h = F.relu(self.l2(h))
        h = torch.relu(self.l3(h)).relu()
        h = self.l4(h)
        h.relu_()  # in place, the result unused
        h = self.l5(h)
        F.relu(h, inplace=True)
        return self.out(h)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.rand(5, 1, 8, 8, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])


# -- values: Captum's maps ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", IG_METHODS)
def test_integrated_gradients_equals_captum_for_every_rule(batch, method) -> None:
    model = relu_cnn()
    x, t = batch
    base = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(9), dtype=x.dtype)
    for baselines in (None, 0.25, base):
        ours = integrated_gradients(model, x, t, n_steps=7, method=method, baselines=baselines)
        theirs = ca.IntegratedGradients(model).attribute(
            x, baselines=baselines, target=t, n_steps=7, method=method
        )
        # Captum rounds its step weights to float32; everything else is the same arithmetic.
        torch.testing.assert_close(ours.detach(), theirs, rtol=1e-6, atol=1e-9)
    plain = integrated_gradients(model, x, t, n_steps=5, multiply_by_inputs=False)
    theirs = ca.IntegratedGradients(model, multiply_by_inputs=False).attribute(
        x, target=t, n_steps=5
    )
    torch.testing.assert_close(plain.detach(), theirs, rtol=1e-6, atol=1e-9)


def test_saliency_and_input_x_gradient_equal_captum(batch) -> None:
    model = relu_cnn()
    x, t = batch
    for abs_ in (True, False):
        torch.testing.assert_close(
            saliency(model, x, t, abs=abs_).detach(),
            ca.Saliency(model).attribute(x.clone().requires_grad_(), target=t, abs=abs_),
        )
    torch.testing.assert_close(
        input_x_gradient(model, x, t).detach(),
        ca.InputXGradient(model).attribute(x.clone().requires_grad_(), target=t),
    )


def test_tuple_inputs_and_additional_forward_args_follow_captum() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(3)
            self.a, self.b = nn.Linear(4, 3).double(), nn.Linear(2, 3).double()

        def forward(self, u, v, scale):
            return torch.tanh(self.a(u) + self.b(v)) * scale[:, None]

    model = Two()
    g = torch.Generator().manual_seed(4)
    u, v = torch.rand(3, 4, generator=g).double(), torch.rand(3, 2, generator=g).double()
    scale = torch.tensor([1.0, 2.0, -1.0]).double()
    ours = integrated_gradients(
        model, (u, v), 1, baselines=(0.5, torch.zeros(2).double()), n_steps=6,
        additional_forward_args=(scale,),
    )  # fmt: skip
    theirs = ca.IntegratedGradients(model).attribute(
        (u, v), baselines=(0.5, torch.zeros(1, 2).double()), target=1, n_steps=6,
        additional_forward_args=(scale,),
    )  # fmt: skip
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a.detach(), b, rtol=1e-6, atol=1e-9)


def test_completeness_and_exactness(batch) -> None:
    model = relu_cnn()
    x, t = batch
    with torch.no_grad():
        delta = (model(x) - model(torch.zeros_like(x))).gather(1, t[:, None])[:, 0]

    def gap(n: int) -> float:
        maps = integrated_gradients(model, x, t, n_steps=n).detach()
        return float((maps.sum(dim=(1, 2, 3)) - delta).abs().max())

    # sum IG = f(x) - f(0) up to the rule's error, which shrinks with the steps (a ReLU net's
    # integrand jumps at kinks, so convergence is slow but steady)
    assert gap(128) < 0.01 * float(delta.abs().max())
    assert gap(128) < gap(32) < gap(8)
    # For a linear model every rule is exact, IG = (x - b) * w, except Captum's trapezoid, whose
    # weights 1/m with halved ends sum to (m - 1) / m (followed here for parity with Captum).
    lin = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).double()
    w = lin[1].weight[t].reshape(x.shape)
    for method in IG_METHODS:
        got = integrated_gradients(lin, x, t, n_steps=3, method=method, baselines=0.5)
        scale = 2 / 3 if method == "riemann_trapezoid" else 1.0
        torch.testing.assert_close(got.detach(), scale * (x - 0.5) * w)


def test_interpolation_points_are_one_batch_in_block_layout(batch) -> None:
    model = relu_cnn()
    seen: list[torch.Tensor] = []
    handle = model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    x, t = batch
    try:
        integrated_gradients(model, x, t, n_steps=4, method="riemann_left", baselines=0.0)
    finally:
        handle.remove()
    assert len(seen) == 1
    assert seen[0].shape == (4 * 5, 1, 8, 8)
    alphas, _ = integration_rule("riemann_left", 4)
    for k, alpha in enumerate(alphas):  # rows k*B .. (k+1)*B are step k of every sample
        torch.testing.assert_close(seen[0][k * 5 : (k + 1) * 5], alpha * x)


# -- graphs: parameters and inputs --------------------------------------------------------------------
def _smooth_net() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


@pytest.mark.parametrize("kernel", ["saliency", "input_x_gradient", "integrated_gradients"])
def test_parameter_gradients_match_finite_differences(kernel) -> None:
    model = _smooth_net()
    x = torch.rand(3, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    t = torch.tensor([0, 2, 1])
    names = [n for n, _ in model.named_parameters()]
    fn = wrapgrad.differentiable.KERNELS[kernel]
    opts = {"n_steps": 5} if kernel == "integrated_gradients" else {}
    if kernel == "saliency":
        opts["abs"] = False

    def maps_of(*params: torch.Tensor) -> torch.Tensor:
        def forward(z: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(model, dict(zip(names, params, strict=True)), (z,))

        return fn(forward, x, t, **opts)

    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())
    assert torch.autograd.gradcheck(maps_of, params)
    # and with respect to the inputs (the map's own graph to x)
    xs = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: fn(model, z, t, **opts), (xs,))


def test_relu_network_parameter_gradient_matches_finite_differences(batch) -> None:
    """Away from the kinks a ReLU network's IG map is smooth in the parameters too."""
    model = relu_cnn()
    x, t = batch[0][:2], batch[1][:2]
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())

    def loss_of(*ps: torch.Tensor) -> torch.Tensor:
        def forward(z: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(model, dict(zip(names, ps, strict=True)), (z,))

        return integrated_gradients(forward, x, t, n_steps=3).pow(2).sum()

    assert torch.autograd.gradcheck(loss_of, params, eps=1e-7, atol=1e-5)


# -- FAR's trick --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [EveryRelu, relu_cnn])
def test_far_trick_keeps_forward_and_first_derivative_bitwise(make) -> None:
    model = make().double()
    x = torch.rand(6, *((5,) if make is EveryRelu else (1, 8, 8)), dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 0, 1, 2])
    before = state_of(model)
    with FarReLUMode(1.0):
        out_far = model(x)
    torch.testing.assert_close(out_far, model(x), rtol=0, atol=0)
    for kernel in (saliency, input_x_gradient):
        assert torch.equal(kernel(model, x, t), kernel(model, x, t, softplus_beta=1.0))
    assert torch.equal(
        integrated_gradients(model, x, t, n_steps=4),
        integrated_gradients(model, x, t, n_steps=4, softplus_beta=0.5),
    )
    assert unchanged(model, before)


def test_far_trick_changes_only_the_second_derivative() -> None:
    """f(x) = w2 . relu(W1 x + b1): ReLU's Hessian is 0; the trick's is W1^T diag(w2 s''(z)) W1."""
    torch.manual_seed(7)
    lin1, lin2 = nn.Linear(3, 4).double(), nn.Linear(4, 1).double()
    model = nn.Sequential(lin1, nn.ReLU(), lin2)
    x = torch.randn(1, 3, dtype=torch.float64)
    beta = 2.0

    def hessian(softplus_beta):
        z = x.clone().requires_grad_(True)
        (g,) = saliency(model, z, None, abs=False, softplus_beta=softplus_beta)
        return torch.stack(
            [torch.autograd.grad(g[i], z, retain_graph=True)[0][0] for i in range(3)]
        )

    assert torch.count_nonzero(hessian(None)) == 0
    pre = lin1(x)[0].detach()
    s = torch.sigmoid(beta * pre)
    want = lin1.weight.T @ torch.diag(lin2.weight[0] * beta * s * (1 - s)) @ lin1.weight
    torch.testing.assert_close(hessian(beta), want.detach())
    # The elementwise function: relu forward, step first derivative, softplus'' second.
    u = torch.linspace(-2, 2, 9, dtype=torch.float64, requires_grad=True)
    y = far_relu(u, beta)
    (d1,) = torch.autograd.grad(y.sum(), u, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), u)
    assert torch.equal(y, torch.relu(u))
    assert torch.equal(d1, (u > 0).double())
    su = torch.sigmoid(beta * u)
    torch.testing.assert_close(d2, (beta * su * (1 - su)).detach())
    assert bool((d2 > 0).all())  # nonzero where ReLU's is zero, on both sides


def test_far_relu_runs_under_torch_func_and_leaves_untracked_calls_alone() -> None:
    u = torch.linspace(-2, 2, 7, dtype=torch.float64)
    d2 = torch.func.vmap(torch.func.grad(torch.func.grad(lambda s: far_relu(s, 1.0))))(u)
    torch.testing.assert_close(d2, torch.sigmoid(u) * (1 - torch.sigmoid(u)))
    with FarReLUMode(1.0), torch.no_grad():
        h = u.clone()
        h.relu_()
    assert torch.equal(h, u.relu())


# -- explainer objects and checks ----------------------------------------------------------------------------
def test_explainer_objects_declare_traits_and_work_in_wrap(batch) -> None:
    model = relu_cnn()
    x, t = batch
    ex = differentiable_explainer(ca.IntegratedGradients, n_steps=6, method="riemann_middle")
    assert isinstance(ex, DifferentiableExplainer)
    assert ex.name == "integrated_gradients"
    traits = traits_of(ex)
    assert traits.differentiable
    assert traits.requires_grad_inputs
    assert traits.vmap_layout == "block"
    explain = wrapgrad.wrap(model, ex)
    want = ca.IntegratedGradients(model).attribute(x, target=t, n_steps=6, method="riemann_middle")
    torch.testing.assert_close(explain(x, target=t).detach(), want, rtol=1e-6, atol=1e-9)
    with pytest.raises(UnknownNameError, match="n_step"):
        differentiable_explainer("integrated_gradients", n_step=3)
    with pytest.raises(UnknownNameError, match="deep_lift"):
        differentiable_explainer("deep_lift")


def test_bad_input_names_the_argument(batch) -> None:
    model = relu_cnn()
    x, t = batch
    with pytest.raises(WrapgradValueError, match=r"^n_steps"):
        integrated_gradients(model, x, t, n_steps=0)
    with pytest.raises(WrapgradValueError, match=r"^method"):
        integrated_gradients(model, x, t, method="simpson")
    with pytest.raises(WrapgradValueError, match=r"^n_steps: the trapezoid"):
        integrated_gradients(model, x, t, n_steps=1, method="riemann_trapezoid")
    with pytest.raises(WrapgradValueError, match=r"^baselines"):
        integrated_gradients(model, x, t, baselines=torch.zeros(2, 8, 8, dtype=x.dtype))
    with pytest.raises(WrapgradValueError, match=r"^target"):
        saliency(model, x, None)
    with pytest.raises(WrapgradTypeError, match=r"^inputs"):
        saliency(model, x.long(), t)
    with pytest.raises(WrapgradValueError, match=r"^softplus_beta"):
        FarReLUMode(0.0)


def test_models_without_differentiable_outputs_are_refused(batch) -> None:
    x, t = batch

    class Detached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(64, 3).double()

        def forward(self, z):
            return self.lin(z.detach().flatten(1))

    with pytest.raises(WrapgradValueError, match=r"^model: .*differentiabl"):
        check_differentiable(Detached(), x)
    with pytest.raises(WrapgradValueError, match=r"^model"):
        saliency(Detached(), x, t)
    with pytest.raises(WrapgradTypeError, match=r"^model"):
        saliency(lambda z: z.flatten(1).argmax(dim=1), x, None)
    check_differentiable(relu_cnn(), x)  # passes
