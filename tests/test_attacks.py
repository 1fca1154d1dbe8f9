"""Attribution attacks (IFIA, Adversarial IFIA) and the softplus twin."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from wrapgrad_metrics.attacks import importance_of
from wrapgrad_metrics.functional import topk_intersection
from wrapgrad_metrics.softplus import SoftplusMode, softplus_twin

import wrapgrad
from wrapgrad.errors import UnknownNameError, WrapgradValueError
from wrapgrad.evaluation import AttackResult, attack_strength_curve

from ._trained import state_of, trained_mnist, unchanged

_state, _unchanged = state_of, unchanged


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mnist_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The naturally trained MNIST CNN and 16 digits it classifies correctly (trained once per
    test run, shared with the other evaluation tests)."""
    return trained_mnist()


# -- the softplus twin -------------------------------------------------------------------------------
class AllRelus(nn.Module):
    """ReLUs written every way: a module (in place), F.relu, torch.relu, Tensor.relu, and the
    in-place functions called for their effect only (their return value ignored)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.l1, self.l2, self.l3, self.l4, self.l5, self.l6 = (
            nn.Linear(4, 6),
            nn.Linear(6, 6),
            nn.Linear(6, 6),
            nn.Linear(6, 6),
            nn.Linear(6, 6),
            nn.Linear(6, 6),
        )
        self.act = nn.ReLU(inplace=True)
        self.out = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.l1(x))
        h = F.relu(self.l2(h))
        h = torch.relu(self.l3(h))
        h = self.l4(h).relu()
        h = self.l5(h)
        h.relu_()  # in place, the result unused
        h = self.l6(h)
        F.relu(h, inplace=True)
        return self.out(h)

    def by_hand(self, x: torch.Tensor, act: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        h = x
        for layer in (self.l1, self.l2, self.l3, self.l4, self.l5, self.l6):
            h = act(layer(h))
        return self.out(h)


def _hessian_vector(forward, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(forward(x)[:, 0].sum(), x, create_graph=True)
    if not g.requires_grad:
        return torch.zeros_like(x)
    (h,) = torch.autograd.grad(g.pow(2).sum(), x, allow_unused=True)
    return torch.zeros_like(x) if h is None else h


def test_softplus_twin_has_second_derivatives_the_relu_net_lacks() -> None:
    model = AllRelus()
    before = _state(model)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    assert torch.count_nonzero(_hessian_vector(model, x)) == 0
    twin = softplus_twin(model, beta=1.0)
    assert torch.count_nonzero(_hessian_vector(twin, x)) == x.numel()
    # Every ReLU call is replaced: the twin's output is softplus applied by hand ...
    with torch.no_grad():
        assert torch.allclose(twin(x), model.by_hand(x, F.softplus), atol=1e-6)
        assert torch.allclose(model(x), model.by_hand(x, F.relu), atol=1e-6)
    # ... and so are its first and second derivatives, in-place forms included.
    z = x.clone().requires_grad_(True)
    (g_twin,) = torch.autograd.grad(twin(z)[:, 0].sum(), z, create_graph=True)
    (g_hand,) = torch.autograd.grad(model.by_hand(z, F.softplus)[:, 0].sum(), z, create_graph=True)
    assert torch.allclose(g_twin, g_hand, atol=1e-6)
    h_hand = _hessian_vector(lambda v: model.by_hand(v, F.softplus), x)
    assert torch.allclose(_hessian_vector(twin, x), h_hand, atol=1e-6)
    # The modules are not swapped and the weights are untouched.
    assert isinstance(model.act, nn.ReLU)
    assert model.act.inplace
    assert _unchanged(model, before)


def test_softplus_twin_approaches_relu_as_beta_grows() -> None:
    model = AllRelus()
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        exact = model(x)
        gaps = [
            (softplus_twin(model, beta=b)(x) - exact).abs().max().item() for b in (1, 10, 100, 1000)
        ]
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[-1] < 1e-3 < gaps[0]
    with pytest.raises(WrapgradValueError, match=r"^beta"):
        SoftplusMode(beta=0)


# -- IFIA on a naturally trained MNIST CNN ------------------------------------------------------------
def test_ifia_topk_lowers_intersection_far_below_random_noise(mnist_model) -> None:
    model, x, y = mnist_model
    x, y = x[:8], y[:8]
    before = _state(model)
    eps, k = 0.1, 50  # FAR Table 2 uses k = 50 on MNIST
    explain = wrapgrad.wrap(model, "saliency")
    ifia = wrapgrad.attack(
        "ifia", objective="topk", epsilon=eps, k=k, steps=8, beta=10.0, bounds=(0, 1)
    )
    result = ifia(model, x, y, explain)
    assert isinstance(result, AttackResult)
    attacked = result.metrics["topk_intersection"]
    # Random noise of the same size: uniform in the ball, and the ball's corners (sign noise).
    imp0 = importance_of(explain(x, target=y))
    g = torch.Generator().manual_seed(1)
    uniform = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * eps).clamp(0, 1)
    corners = (x + (torch.randint(0, 2, x.shape, generator=g) * 2 - 1) * eps).clamp(0, 1)
    rand_u = topk_intersection(imp0, importance_of(explain(uniform, target=y)), k).mean()
    rand_c = topk_intersection(imp0, importance_of(explain(corners, target=y)), k).mean()
    assert attacked.mean() < rand_u - 0.25, (attacked.mean(), rand_u)
    assert attacked.mean() < rand_c - 0.1, (attacked.mean(), rand_c)
    # Every label kept, every perturbation inside the ball and the data range.
    assert bool(result.label_kept.all())
    assert torch.equal(result.labels_after, model(result.inputs).argmax(1))
    assert float(result.perturbation_norm().max()) <= eps + 1e-6
    assert float(result.inputs.min()) >= 0
    assert float(result.inputs.max()) <= 1
    # The record's maps are explain's maps, and the objective went up for every sample (the
    # attack starts at the inputs, so "not down" would hold even without a single step).
    assert torch.equal(result.maps_after, explain(result.inputs, target=y))
    assert bool((result.objective_after > result.objective_before).all())
    # D = -(importance mass on the original top-k): at the start, minus the top-k mass.
    top_mass = imp0.flatten(1).double().sort(dim=1, descending=True).values[:, :k].sum(dim=1)
    assert torch.allclose(result.objective_before, -top_mass)
    assert torch.allclose(
        result.metrics["kendall_tau"],
        wrapgrad.metric("kendall_tau")(imp0, importance_of(result.maps_after)),
    )
    assert _unchanged(model, before)


def test_ifia_l2_mass_center_and_targeted(mnist_model) -> None:
    model, x, y = mnist_model
    x, y = x[:4], y[:4]
    explain = wrapgrad.wrap(model, "saliency")
    r = wrapgrad.attack(
        "ifia", objective="mass_center", epsilon=1.5, norm="l2", steps=5, beta=10.0, bounds=(0, 1)
    )(model, x, y, explain)
    assert float(r.perturbation_norm().max()) <= 1.5 + 1e-5
    assert float(r.inputs.min()) >= 0
    assert float(r.inputs.max()) <= 1
    assert bool(r.label_kept.all())
    assert float(r.objective_after.mean()) > 0.5  # the centre moved by more than half a pixel
    region = torch.zeros(28, 28, dtype=torch.bool)
    region[:8, :8] = True
    t = wrapgrad.attack(
        "ifia",
        objective="targeted",
        target_region=region,
        epsilon=0.1,
        steps=5,
        beta=10.0,
        bounds=(0, 1),
    )(model, x, y, explain)
    assert bool(t.label_kept.all())
    # More importance mass in the target region than before, for every sample.
    assert bool((t.objective_after > t.objective_before).all())


def test_adversarial_ifia_is_far_algorithm_2(mnist_model) -> None:
    """CE + lambda * D is ascended without the label constraint: at FAR's MNIST budget the labels
    of a naturally trained model flip (FAR Table 1: 12 % adversarial accuracy), where IFIA keeps
    every label."""
    model, x, y = mnist_model
    x, y = x[:6], y[:6]
    explain = wrapgrad.wrap(model, "saliency")
    kw = {"epsilon": 0.3, "steps": 5, "beta": 10.0, "bounds": (0, 1), "k": 50}
    r = wrapgrad.attack("adversarial_ifia", lam=0.5, **kw)(model, x, y, explain)
    assert float(r.perturbation_norm().max()) <= 0.3 + 1e-6
    assert float(r.inputs.min()) >= 0
    assert float(r.inputs.max()) <= 1
    with torch.no_grad():
        ce0 = F.cross_entropy(model(x), y, reduction="none")
        ce1 = F.cross_entropy(model(r.inputs), y, reduction="none")
    assert bool((ce1 > ce0).all())
    assert float(r.label_kept.float().mean()) <= 0.5
    # The objective is CE + lambda * D, measured with explain.
    top_mass = importance_of(r.maps_before).flatten(1).double().sort(dim=1, descending=True)
    d0 = -top_mass.values[:, :50].sum(dim=1)
    assert torch.allclose(r.objective_before, ce0.double() + 0.5 * d0, atol=1e-5)
    assert bool((r.objective_after > r.objective_before).all())
    ifia = wrapgrad.attack("ifia", **kw)(model, x, y, explain)
    assert bool(ifia.label_kept.all())


def test_ifia_is_reproducible_and_curve_weakens_with_budget(mnist_model) -> None:
    model, x, y = mnist_model
    x, y = x[:6], y[:6]
    explain = wrapgrad.wrap(model, "input_x_gradient")
    kw = {
        "objective": "topk",
        "k": 30,
        "steps": 5,
        "restarts": 2,
        "beta": 10.0,
        "bounds": (0, 1),
        "seed": 3,
    }
    a = wrapgrad.attack("ifia", epsilon=0.1, **kw)(model, x, y, explain)
    b = wrapgrad.attack("ifia", epsilon=0.1, **kw)(model, x, y, explain)
    assert torch.equal(a.inputs, b.inputs)
    curve = attack_strength_curve("ifia", model, x, y, explain, [0.01, 0.15], **kw)
    assert curve.scores.shape == (2, 6)
    assert curve.mean[1] < curve.mean[0]


def test_ifia_spsa_fallback_for_methods_without_a_surrogate(mnist_model) -> None:
    model, x, y = mnist_model
    x, y = x[:3], y[:3]
    explain = wrapgrad.wrap(model, "saliency", "smoothgrad", n_samples=2, noise_level=0.1, seed=0)
    r = wrapgrad.attack(
        "ifia", epsilon=0.1, steps=2, surrogate="spsa", spsa_samples=2, bounds=(0, 1)
    )(model, x, y, explain)
    assert bool(r.label_kept.all())
    assert bool((r.objective_after > r.objective_before).any())


def test_attack_bad_input() -> None:
    with pytest.raises(WrapgradValueError, match=r"^epsilon: expected a number > 0"):
        wrapgrad.attack("ifia", epsilon=0)
    with pytest.raises(WrapgradValueError, match=r"^objective"):
        wrapgrad.attack("ifia", objective="center")
    with pytest.raises(WrapgradValueError, match=r"^target_region"):
        wrapgrad.attack("ifia", objective="targeted")
    with pytest.raises(WrapgradValueError, match=r"^norm"):
        wrapgrad.attack("ifia", norm="l1")
    with pytest.raises(WrapgradValueError, match=r"^bounds: expected \(low, high\)"):
        wrapgrad.attack("ifia", bounds=(1, 0))
    with pytest.raises(UnknownNameError, match="ifia"):
        wrapgrad.attack("ifa")
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(2, 1, 4, 4)
    explain = wrapgrad.wrap(model, "saliency")
    with pytest.raises(WrapgradValueError, match=r"^k: .*\(16\).*17"):
        wrapgrad.attack("ifia", k=17)(model, x, None, explain)
    with pytest.raises(WrapgradValueError, match=r"^k: .*fraction"):
        wrapgrad.attack("ifia", k=1.5)
    with pytest.raises(
        UnknownNameError, match=r"^attack 'ifia': unknown option 'epsilom'; did you mean 'epsilon'"
    ):
        wrapgrad.attack("ifia", epsilom=0.1)
    # k as a fraction of the features: 0.25 of 16 is 4.
    torch.manual_seed(0)
    relu_net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    explain = wrapgrad.wrap(relu_net, "saliency")
    by_fraction = wrapgrad.attack("ifia", k=0.25, steps=2)(relu_net, x, None, explain)
    by_count = wrapgrad.attack("ifia", k=4, steps=2)(relu_net, x, None, explain)
    assert torch.equal(by_fraction.inputs, by_count.inputs)
    assert not torch.equal(by_fraction.inputs, x)  # it did move
    with pytest.raises(WrapgradValueError, match=r"^bounds: the inputs lie outside"):
        wrapgrad.attack("ifia", bounds=(0.0, 0.5))(model, x + 1, None, explain)
    bad_region = torch.ones(5, 5, dtype=torch.bool)
    with pytest.raises(WrapgradValueError, match=r"^target_region: .*\(5, 5\)"):
        wrapgrad.attack("ifia", objective="targeted", target_region=bad_region)(
            model, x, None, explain
        )


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("saliency", {}),
        ("saliency", {"abs": False}),
        ("input_x_gradient", {}),
        ("integrated_gradients", {"n_steps": 8, "method": "riemann_middle"}),
        ("integrated_gradients", {"n_steps": 8, "method": "riemann_middle", "baselines": 0.5}),
    ],
)
def test_differentiable_surrogates_agree_with_captum(method: str, options: dict) -> None:
    from wrapgrad_metrics.surrogate import make_surrogate

    model = AllRelus()
    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0, 1, 2, 0])
    explain = wrapgrad.wrap(model, method, **options)
    surrogate = make_surrogate(explain)
    assert surrogate is not None
    got = surrogate(model, x.clone().requires_grad_(True), t)
    assert got.requires_grad  # differentiable in the input (through the softplus twin)
    assert torch.allclose(got.detach(), explain(x, target=t), atol=1e-5)


def test_enhanced_maps_are_attacked_through_the_base_method(mnist_model) -> None:
    model, x, y = mnist_model
    x, y = x[:3], y[:3]
    before = _state(model)
    explain = wrapgrad.wrap(model, "saliency", "smoothgrad", n_samples=2, noise_level=0.1, seed=0)
    r = wrapgrad.attack("ifia", epsilon=0.1, steps=3, beta=10.0, bounds=(0, 1))(
        model, x, y, explain
    )
    assert bool(r.label_kept.all())
    assert bool((r.objective_after > r.objective_before).any())
    assert torch.equal(r.maps_after, explain(r.inputs, target=y))  # measured with explain
    assert _unchanged(model, before)
    assert all(p.grad is None for p in model.parameters())


def test_progress_bar_can_be_shown_and_silenced(capsys: pytest.CaptureFixture[str]) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(2, 1, 4, 4)
    explain = wrapgrad.wrap(model, "saliency")
    wrapgrad.attack("ifia", steps=2, k=3, progress=True)(model, x, None, explain)
    assert "ifia" in capsys.readouterr().err
    wrapgrad.attack("ifia", steps=2, k=3, progress=False)(model, x, None, explain)
    wrapgrad.metric("sensitivity", steps=2, progress=False)(model, x, None, explain)
    assert capsys.readouterr().err == ""
