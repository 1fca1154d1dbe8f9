"""Metrics of the wrapgrad_metrics plugin: hand-computed cases, agreement with scipy/sklearn,
closed forms on linear models, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from torch import nn
from wrapgrad_metrics import functional as fn
from wrapgrad_metrics.curves import ig_saturation_curve, pic_curve

import wrapgrad
from wrapgrad.errors import UnknownNameError, WrapgradValueError

from ._trained import state_of, trained_mnist, unchanged

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Linear2(nn.Module):
    """logits = [w.x + c, 0]: gradients are exactly w."""

    def __init__(self, w: torch.Tensor, c: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.reshape(x.shape[0], -1) * self.w.reshape(1, -1)).sum(dim=1) + self.c
        return torch.stack([z, torch.zeros_like(z)], dim=1)


class TinyCNN(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * 8 * 8, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture(scope="module")
def mnist_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The naturally trained MNIST CNN shared with the attack tests (trained once per run)."""
    return trained_mnist()


_state, _unchanged = state_of, unchanged


# -- map-to-map metrics ------------------------------------------------------------------------
def test_topk_intersection_hand_computed() -> None:
    # The lecture's example: top-5 of A is {0..4}, of B {3..7} -> 2/5.
    a = torch.tensor([[9.0, 8, 7, 6, 5, 0, 0, 0, 0, 0]])
    b = torch.tensor([[0.0, 0, 0, 9, 8, 7, 6, 5, 0, 0]])
    assert fn.topk_intersection(a, b, 5).tolist() == [0.4]
    m = wrapgrad.metric("topk_intersection", k=5)
    assert m(a, b).tolist() == [0.4]
    assert m(a, a).tolist() == [1.0]
    # Importance is magnitude by default; abs=False ranks signed values.
    c = torch.tensor([[-9.0, 1, 2, 0]])
    d = torch.tensor([[9.0, 0, 0, 0]])
    assert fn.topk_intersection(c, d, 1).tolist() == [1.0]
    assert wrapgrad.metric("topk_intersection", k=1)(c, d).tolist() == [1.0]
    assert fn.topk_intersection(c, d, 1, abs=False).tolist() == [0.0]
    assert wrapgrad.metric("topk_intersection", k=1, abs=False)(c, d).tolist() == [0.0]
    # k as a fraction of the features: 0.5 of 10 is the top 5 (as above), 0.25 the top 3
    # (rounded up): {0, 1, 2} and {3, 4, 5} share nothing; 1.0 is all features.
    assert wrapgrad.metric("topk_intersection", k=0.5)(a, b).tolist() == [0.4]
    assert fn.topk_intersection(a, b, 0.25).tolist() == [0.0]
    assert fn.topk_intersection(a, b, 0.35).tolist() == [0.25]  # top 4: {3} shared
    assert fn.topk_intersection(a, b, 1.0).tolist() == [1.0]
    # Per sample, with channel reduction: sample 1 is sample 0 with two features swapped.
    e = torch.tensor([[[1.0, 2, 3, 4]], [[1.0, 2, 3, 4]]]).expand(2, 3, 4)
    f = e.clone()
    f[1] = torch.tensor([1.0, 4, 3, 2])
    got = fn.topk_intersection(e, f, 2, channel_reduction="sum_abs")
    assert got.tolist() == [1.0, 0.5]


def test_topk_ties_broken_towards_lower_index() -> None:
    a = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    # top-1 of a is index 0 (lowest index among the tied), same as b.
    assert fn.topk_intersection(a, b, 1).tolist() == [1.0]


def test_channel_reduction_sum_abs() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 3, 4, 4, generator=g)
    b = torch.randn(2, 3, 4, 4, generator=g)
    got = fn.kendall_tau(a, b, channel_reduction="sum_abs")
    want = fn.kendall_tau(a.abs().sum(1), b.abs().sum(1))
    assert torch.equal(got, want)
    m = wrapgrad.metric("spearman_rho", channel_reduction="max_abs")
    assert torch.allclose(m(a, b), fn.spearman_rho(a.abs().amax(1), b.abs().amax(1)))


def test_rank_correlations_hand_computed() -> None:
    a = torch.tensor([[1.0, 2, 3, 4]])
    b = torch.tensor([[1.0, 3, 2, 4]])
    # 5 concordant, 1 discordant pair: (5 - 1) / 6.
    assert fn.kendall_tau(a, b).item() == pytest.approx(2 / 3)
    # sum d^2 = 2: 1 - 6 * 2 / (4 * 15).
    assert fn.spearman_rho(a, b).item() == pytest.approx(0.8)
    # Ties (tau-b): pairs (0,1) tied in a, two concordant: 2 / sqrt((3 - 1) * 3).
    c = torch.tensor([[1.0, 1, 2]])
    d = torch.tensor([[1.0, 2, 3]])
    assert fn.kendall_tau(c, d).item() == pytest.approx(2 / np.sqrt(6))
    # Average ranks of c: 1.5, 1.5, 3.
    assert torch.equal(fn.average_ranks(c.double()), torch.tensor([[1.5, 1.5, 3.0]]).double())
    assert fn.kendall_tau(a, -a).item() == -1.0
    # A constant map has no rank correlation (as scipy: NaN).
    assert torch.isnan(fn.kendall_tau(a, torch.ones_like(a))).all()
    assert torch.isnan(fn.spearman_rho(a, torch.ones_like(a))).all()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("levels", [None, 3, 7])
def test_rank_correlations_agree_with_scipy(seed: int, levels: int | None) -> None:
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(2, 300, (1,), generator=g))
    a = torch.randn(4, 1, n, generator=g)
    b = a + torch.randn(4, 1, n, generator=g)
    if levels is not None:  # many ties
        a = torch.round(a * levels / 3)
        b = torch.round(b * levels / 3)
    kt = fn.kendall_tau(a, b)
    sp = fn.spearman_rho(a, b)
    for i in range(4):
        x, y = a[i].flatten().numpy(), b[i].flatten().numpy()
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            assert torch.isnan(kt[i])
            assert torch.isnan(sp[i])
            continue
        assert kt[i].item() == pytest.approx(scipy.stats.kendalltau(x, y).statistic, abs=1e-12)
        assert sp[i].item() == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 3), st.integers(-3, 3)), min_size=2, max_size=40))
def test_rank_correlations_match_scipy_on_any_small_maps(pairs: list[tuple[int, int]]) -> None:
    a = torch.tensor([[p[0] for p in pairs]], dtype=torch.float32)
    b = torch.tensor([[p[1] for p in pairs]], dtype=torch.float32)
    x, y = a[0].numpy(), b[0].numpy()
    kt, sp = fn.kendall_tau(a, b).item(), fn.spearman_rho(a, b).item()
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        assert np.isnan(kt)
        assert np.isnan(sp)
    else:
        assert kt == pytest.approx(scipy.stats.kendalltau(x, y).statistic, abs=1e-12)
        assert sp == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-12)
    k = len(pairs) // 2 + 1
    inter = fn.topk_intersection(a, b, k).item()
    assert inter == fn.topk_intersection(b, a, k).item()
    assert 0 <= inter <= 1
    assert fn.topk_intersection(a, a, k).item() == 1.0


def test_kendall_is_fast_on_full_images() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, 3, 64, 64, generator=g)
    b = a + torch.randn(1, 3, 64, 64, generator=g)
    got = fn.kendall_tau(a, b).item()
    want = scipy.stats.kendalltau(a.flatten().numpy(), b.flatten().numpy()).statistic
    assert got == pytest.approx(want, abs=1e-12)


def test_map_metric_errors_name_the_argument() -> None:
    a = torch.zeros(2, 5)
    with pytest.raises(WrapgradValueError, match=r"^b: .*\(2, 5\).*\(2, 6\)"):
        fn.kendall_tau(a, torch.zeros(2, 6))
    with pytest.raises(WrapgradValueError, match=r"^k: .*\(5\).*6"):
        wrapgrad.metric("topk_intersection", k=6)(a, a)
    with pytest.raises(WrapgradValueError, match=r"^k: .*fraction"):
        wrapgrad.metric("topk_intersection", k=1.5)
    with pytest.raises(WrapgradValueError, match=r"^k: .*fraction"):
        fn.topk_intersection(a, a, 0.0)
    with pytest.raises(UnknownNameError, match=r"^metric 'topk_intersection': unknown option 'kk'"):
        wrapgrad.metric("topk_intersection", kk=5)
    with pytest.raises(WrapgradValueError, match=r"^channel_reduction"):
        wrapgrad.metric("kendall_tau", channel_reduction="median")
    with pytest.raises(WrapgradValueError, match=r"^channel_reduction: .*no channel axis"):
        fn.spearman_rho(a, a, channel_reduction="sum_abs")
    with pytest.raises(UnknownNameError, match="kendall_tau"):
        wrapgrad.metric("kendal_tau")


# -- localisation -------------------------------------------------------------------------------
def test_localisation_auc_hand_computed_and_sklearn() -> None:
    scores = torch.tensor([[0.9, 0.8, 0.3, 0.1]])
    mask = torch.tensor([[True, False, True, False]])
    m = wrapgrad.metric("localisation_auc", channel_reduction=None)
    # Positive beats negative in 3 of the 4 pairs.
    assert m(scores, mask).tolist() == [0.75]
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(3, 2, 6, 6, generator=g).round()  # ties included
    masks = torch.rand(3, 6, 6, generator=g) > 0.6
    got = wrapgrad.metric("localisation_auc")(maps, masks)
    for i in range(3):
        want = roc_auc_score(masks[i].flatten().numpy(), maps[i].abs().sum(0).flatten().numpy())
        assert got[i].item() == pytest.approx(want, abs=1e-12)
    # Masks in Quantus' layout (B, 1, H, W) and shared (H, W) masks mean the same.
    assert torch.equal(wrapgrad.metric("localisation_auc")(maps, masks[:, None]), got)
    shared = wrapgrad.metric("localisation_auc")(maps, masks[0])
    assert shared[0].item() == got[0].item()
    # A map that is 1 on the mask and 0 elsewhere localises perfectly; its negative (by
    # signed value) not at all.
    perfect = masks[:, None].float().expand(3, 2, 6, 6)
    assert wrapgrad.metric("localisation_auc")(perfect, masks).tolist() == [1.0] * 3
    signed = wrapgrad.metric("localisation_auc", abs=False, channel_reduction="sum")
    assert signed(-perfect, masks).tolist() == [0.0] * 3


def test_localisation_bad_mask() -> None:
    m = wrapgrad.metric("localisation_auc")
    maps = torch.randn(2, 3, 4, 4)
    with pytest.raises(WrapgradValueError, match=r"^mask: .*\(2, 4, 4\).*\(2, 5, 5\)"):
        m(maps, torch.ones(2, 5, 5, dtype=torch.bool))
    with pytest.raises(WrapgradValueError, match=r"^mask\[0\]: .*both"):
        m(maps, torch.ones(2, 4, 4, dtype=torch.bool))


# -- sensitivity S_r ----------------------------------------------------------------------------
def test_sensitivity_is_zero_for_linear_saliency() -> None:
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    model = Linear2(w, c=5.0)
    explain = wrapgrad.wrap(model, "saliency", abs=False)
    x = torch.rand(3, 4)
    s = wrapgrad.metric("sensitivity", r=0.1, steps=3)(model, x, None, explain)
    assert torch.equal(s, torch.zeros(3, dtype=torch.float64))


def test_sensitivity_beats_random_search_in_the_same_ball() -> None:
    model = TinyCNN(seed=3).eval()
    before = _state(model)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 8, 8, generator=g)
    target = model(x).argmax(1)
    explain = wrapgrad.wrap(model, "saliency")
    r = 0.05
    s = wrapgrad.metric("sensitivity", r=r, steps=8, restarts=2, seed=0)(model, x, target, explain)
    a0 = explain(x, target=target)
    best = torch.zeros(4, dtype=torch.float64)
    for _ in range(30):
        z = x + (torch.rand(x.shape, generator=g) * 2 - 1) * r
        same = model(z).argmax(1) == target
        ratio = (explain(z, target=target) - a0).flatten(1).norm(dim=1) / a0.flatten(1).norm(dim=1)
        best = torch.maximum(best, torch.where(same, ratio.double(), best))
    assert bool((s >= best).all()), (s, best)
    assert bool((s > 0).all())
    assert _unchanged(model, before)
    s2 = wrapgrad.metric("sensitivity", r=r, steps=8, restarts=2, seed=0)(model, x, target, explain)
    assert torch.equal(s, s2)


def test_sensitivity_spsa_fallback_runs_through_explain() -> None:
    model = TinyCNN(seed=3).eval()
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    explain = wrapgrad.wrap(model, "saliency")
    s = wrapgrad.metric(
        "sensitivity", r=0.05, steps=2, restarts=1, surrogate="spsa", spsa_samples=2
    )
    out = s(model, x, None, explain)
    assert out.shape == (2,)
    assert bool((out > 0).all())


def test_sensitivity_bad_radius() -> None:
    with pytest.raises(WrapgradValueError, match=r"^r: expected a number > 0"):
        wrapgrad.metric("sensitivity", r=0)
    with pytest.raises(WrapgradValueError, match=r"^r: "):
        wrapgrad.metric("sensitivity", r=-0.1)
    model = Linear2(torch.ones(4))
    explain = wrapgrad.wrap(model, "saliency")
    with pytest.raises(WrapgradValueError, match=r"^bounds: the inputs lie outside"):
        wrapgrad.metric("sensitivity", bounds=(0, 1))(model, torch.full((2, 4), 2.0), 0, explain)


# -- curves -------------------------------------------------------------------------------------
def test_deletion_insertion_hand_computed() -> None:
    model = Linear2(torch.tensor([4.0, 3.0, 2.0, 1.0]))
    explain = wrapgrad.wrap(model, "saliency", abs=False)
    x = torch.ones(1, 4)
    t = torch.tensor([0])
    # Logits while deleting the most relevant first: 10, 6, 3, 1, 0 at fractions 0, .25, ... 1.
    deletion = wrapgrad.metric("deletion", n_steps=4, softmax=False)
    curve = deletion.curve(model, x, t, explain)
    assert curve.y.tolist() == [[10.0, 6.0, 3.0, 1.0, 0.0]]
    assert deletion(model, x, t, explain).item() == pytest.approx(3.75)
    insertion = wrapgrad.metric("insertion", n_steps=4, softmax=False)
    assert insertion.curve(model, x, t, explain).y.tolist() == [[0.0, 4.0, 7.0, 9.0, 10.0]]
    assert insertion(model, x, t, explain).item() == pytest.approx(6.25)
    lerf = wrapgrad.metric("deletion", n_steps=4, softmax=False, order="lerf")
    assert lerf(model, x, t, explain).item() == pytest.approx(6.25)


def test_deletion_ranks_a_trained_cnns_maps_above_random_maps(mnist_model) -> None:
    model, x, y = mnist_model
    x, y = x[:8], y[:8]
    before = _state(model)
    explain = wrapgrad.wrap(model, "input_x_gradient")
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    random_map = wrapgrad.wrap(model, lambda m, inputs, target=None: noise)
    morf = wrapgrad.metric("deletion", n_steps=10)
    lerf = wrapgrad.metric("deletion", n_steps=10, order="lerf")
    d_morf, d_lerf = morf(model, x, y, explain), lerf(model, x, y, explain)
    d_random = morf(model, x, y, random_map)
    # Removing the most relevant pixels first destroys the prediction fastest.
    assert bool((d_morf < d_lerf).all())
    assert float(d_morf.mean()) < float(d_random.mean()) - 0.2
    assert float(d_lerf.mean()) > float(d_random.mean()) + 0.2
    # With one baseline, inserting the top fraction f is deleting the bottom 1 - f: the MoRF
    # insertion curve is the LeRF deletion curve read backwards.
    ins = wrapgrad.metric("insertion", n_steps=10).curve(model, x, y, explain)
    dele = lerf.curve(model, x, y, explain)
    assert torch.allclose(ins.y, dele.y.flip(1))
    assert torch.allclose(ins.auc, d_lerf)
    assert _unchanged(model, before)


def test_sic_aic_rank_a_faithful_map_above_its_opposite() -> None:
    class RegionNet(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = 10 * (x[:, :, 4:12, 4:12].mean(dim=(1, 2, 3)) - 0.5)
            return torch.stack([z, torch.zeros_like(z)], dim=1)

    model = RegionNet()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 16, 16, generator=g) * 0.2
    x[:, :, 4:12, 4:12] = 0.8 + 0.2 * torch.rand(2, 1, 8, 8, generator=g)
    good = torch.zeros_like(x)
    good[:, :, 4:12, 4:12] = 1.0 + torch.rand(2, 1, 8, 8, generator=g)
    bad = 1.0 - good.clamp(max=1) + 0.01 * torch.rand(x.shape, generator=g)
    t = torch.tensor([0, 0])
    for kind in ("sic", "aic"):
        c_good = pic_curve(model, x, t, good, kind=kind, blur_sigma=4.0)
        c_bad = pic_curve(model, x, t, bad, kind=kind, blur_sigma=4.0)
        for c in (c_good, c_bad):
            assert bool(((c.x >= 0) & (c.x <= 1) & (c.y >= 0) & (c.y <= 1)).all())
            assert torch.equal(c.x[:, -1], torch.ones(2, dtype=torch.float64))
        assert bool((c_good.auc > c_bad.auc + 0.2).all()), (kind, c_good.auc, c_bad.auc)
    explain = wrapgrad.wrap(model, lambda m, inputs, target=None: good)
    sic = wrapgrad.metric("sic", blur_sigma=4.0)(model, x, t, explain)
    assert torch.allclose(sic, pic_curve(model, x, t, good, blur_sigma=4.0).auc)


def test_ig_saturation_linear_closed_form() -> None:
    w = torch.tensor([1.0, 2.0, 2.0])
    model = Linear2(w)
    x = torch.ones(2, 3)
    curve = ig_saturation_curve(model, x, 0, n_steps=10)
    # The logit is linear along the path: it covers 95% first at the midpoint 0.95.
    assert torch.allclose(curve.logits[0], 5.0 * curve.alphas)
    assert torch.allclose(curve.grad_norms, torch.full((2, 10), 3.0, dtype=torch.float64))
    assert torch.allclose(curve.alignment, torch.ones(2, 10, dtype=torch.float64))
    assert curve.saturation_alpha.tolist() == pytest.approx([0.95, 0.95])
    assert curve.post_saturation_share.tolist() == [0.0, 0.0]

    class Saturating(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # The logit saturates early along the path from 0 to ones(3), but a gradient
            # orthogonal to the path keeps its norm (the ResNet case of Jha et al., Fig. 3).
            z = 0.3 * torch.tanh(x.sum(dim=1) / 0.3) + 5 * (x[:, 0] - x[:, 1])
            return torch.stack([z, -z], dim=1)

    # Along the path x_a = a * ones(3): logit 0.3 tanh(10 a), gradient
    # sech^2(10 a) (1, 1, 1) + 5 (1, -1, 0). 95 % of the logit's change is covered first at the
    # midpoint 0.225 (tanh(1.75) / tanh(10) < 0.95 <= tanh(2.25) / tanh(10)).
    n = 20
    alphas = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    s2 = 1 / torch.cosh(10 * alphas) ** 2
    grads = torch.stack([s2 + 5, s2 - 5, s2], dim=1)
    norms = grads.norm(dim=1)
    curve = ig_saturation_curve(Saturating(), torch.ones(1, 3), 0, n_steps=n)
    assert curve.saturation_alpha.item() == pytest.approx(0.225)
    assert torch.allclose(curve.logits[0], 0.3 * torch.tanh(10 * alphas), atol=1e-6)
    assert torch.allclose(curve.grad_norms[0], norms, atol=1e-5)
    mean = grads.mean(dim=0)
    align = grads @ mean / (norms * mean.norm())
    assert torch.allclose(curve.alignment[0], align, atol=1e-5)
    want = norms[alphas > 0.225 + 1e-9].sum() / norms.sum()
    share = wrapgrad.metric("ig_saturation", n_steps=n)(Saturating(), torch.ones(1, 3), 0, None)
    assert share.item() == pytest.approx(want.item(), abs=1e-6)
    assert share.item() > 0.7  # the ResNet-like case: most gradient mass after saturation
    # A logit that falls along the path saturates too (the sign of its change is kept).
    falling = ig_saturation_curve(Saturating(), -torch.ones(1, 3), 0, n_steps=n)
    assert falling.saturation_alpha.item() == pytest.approx(0.225)


# -- Captum metrics -------------------------------------------------------------------------------
def test_captum_metrics_on_a_linear_model() -> None:
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    model = Linear2(w)
    before = _state(model)
    x = torch.rand(3, 4)
    exact = wrapgrad.wrap(model, "saliency", abs=False)
    wrong = wrapgrad.wrap(model, "saliency")  # |w| is not w
    inf = wrapgrad.metric("captum_infidelity", n_perturb_samples=20)
    assert torch.allclose(inf(model, x, 0, exact), torch.zeros(3), atol=1e-10)
    assert bool((inf(model, x, 0, wrong) > 1e-3).all())
    assert torch.equal(inf(model, x, 0, wrong), inf(model, x, 0, wrong))  # seeded
    sens = wrapgrad.metric("captum_sensitivity_max", n_perturb_samples=5)
    assert torch.equal(sens(model, x, 0, exact), torch.zeros(3))
    model2 = TinyCNN(seed=1)
    explain2 = wrapgrad.wrap(model2, "saliency")
    xi = torch.rand(2, 1, 8, 8)
    assert bool((sens(model2, xi, 0, explain2) > 0).all())
    assert _unchanged(model, before)
