"""The SDE noise: increment statistics, the attribution shaping on hand-built maps, the
normalisation rule, the guide store, and torchsde's Euler-Maruyama solver as an oracle."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import wrapgrad
from wrapgrad.errors import WrapgradError
from wrapgrad.registry import get_registry
from wrapgrad.sde import carry_to, guide_magnitude, normalise_attribution
from wrapgrad.sde.normalise import row_quantiles

from .test_sde import batch, make_resnet


def record_increments(sde) -> tuple[dict[str, dict[str, torch.Tensor]], list]:
    """Per block: the deterministic output Φ(x) and the stochastic output, via hooks on the
    converted model (ours, not the user's)."""
    seen: dict[str, dict[str, torch.Tensor]] = {}
    handles = []
    for name in sde.blocks:
        block = sde.net.get_submodule(name)

        def inner(mod, inp, out, name=name):
            seen.setdefault(name, {})["drift"] = out.detach()

        def outer(mod, inp, out, name=name):
            seen[name]["out"] = out.detach()

        handles += [block.block.register_forward_hook(inner), block.register_forward_hook(outer)]
    return seen, handles


def increments(sde, x: torch.Tensor, passes: int = 1) -> dict[str, torch.Tensor]:
    seen, handles = record_increments(sde)
    out: dict[str, list[torch.Tensor]] = {n: [] for n in sde.blocks}
    try:
        with torch.no_grad():
            for _ in range(passes):
                sde(x)
                for n in sde.blocks:
                    out[n].append(seen[n]["out"] - seen[n]["drift"])
    finally:
        for h in handles:
            h.remove()
    return {n: torch.cat(v) for n, v in out.items()}


def within_sampling_error(values: torch.Tensor, variance: float, sds: float = 5.0) -> bool:
    """The sample variance of zero-mean Gaussian draws is within ``sds`` standard errors
    (``variance * sqrt(2 / n)``) of ``variance``."""
    n = values.numel()
    empirical = float((values.double() ** 2).mean())
    return abs(empirical - variance) <= sds * variance * math.sqrt(2 / n)


# -- Brownian -------------------------------------------------------------------------------------------
def test_brownian_increments_have_variance_sigma_squared_dt() -> None:
    sigma = 0.8
    sde = wrapgrad.to_sde(make_resnet(), sigma=sigma, seed=0).train()
    incs = increments(sde, batch(16), passes=4)
    for name, inc in incs.items():
        assert within_sampling_error(inc, sigma**2 * sde.dt), name
        assert abs(float(inc.mean())) < 5 * sigma * math.sqrt(sde.dt / inc.numel())
        # ... and not the variance of a step with another dt (sigma^2, or sigma^2 dt^2).
        assert not within_sampling_error(inc, sigma**2)
        assert not within_sampling_error(inc, sigma**2 * sde.dt**2)


def test_dt_scales_only_the_noise() -> None:
    model = make_resnet()
    for dt in (1.0, 0.05):
        sde = wrapgrad.to_sde(model, sigma=0.5, dt=dt, seed=1).train()
        for name, inc in increments(sde, batch(8), passes=3).items():
            assert within_sampling_error(inc, 0.25 * dt), (dt, name)


# -- attribution-shaped -----------------------------------------------------------------------------------
def hand_built_map() -> torch.Tensor:
    """16 x 16: the right half 1; the left half a checkerboard of 0 and 1. Three channels, the
    middle one negated (only |Â| matters). The 99th percentile of |A| is 1, so Â = A."""
    a = torch.ones(16, 16)
    rows, cols = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    a[:, :8] = ((rows + cols) % 2 == 0).float()[:, :8]
    return torch.stack([a, -a, a])


def expected_guide(size: int) -> torch.Tensor:
    """|Â| average-pooled to ``size`` x ``size``, by hand: at 16 the map itself; at 8 and 4
    every left-half cell averages a checkerboard, 0.5, and the right half stays 1."""
    if size == 16:
        return hand_built_map()[0]
    g = torch.ones(size, size)
    g[:, : size // 2] = 0.5
    return g


def test_shaped_increments_follow_the_map_pooled_to_each_block() -> None:
    sigma = 0.9
    model = make_resnet(in_channels=3)
    sde = wrapgrad.to_sde(model, sigma=sigma, noise="attribution_shaped", seed=0).train()
    n = 32
    x = batch(n, channels=3)
    sde.set_guide(hand_built_map().expand(n, 3, 16, 16))
    incs = increments(sde, x, passes=3)
    for name, inc in incs.items():
        size = inc.shape[-1]
        g = expected_guide(size)
        # Per location: the increment over g is a Brownian increment of variance Σ² dt; where g
        # is 0 the increment is exactly 0.
        zero = g == 0
        assert torch.equal(inc[..., zero], torch.zeros_like(inc[..., zero])), name
        for level in g.unique():
            if level == 0:
                continue
            cells = inc[..., g == level]
            assert within_sampling_error(cells, (sigma * float(level)) ** 2 * sde.dt), (name, level)
    assert sorted({v.shape[-1] for v in incs.values()}) == [4, 8, 16]


def test_without_a_guide_the_shaped_noise_is_brownian() -> None:
    """The first round of the iterative training: no attribution yet, so unshaped noise."""
    model = make_resnet().train()
    x = batch()
    shaped = wrapgrad.to_sde(model, noise="attribution_shaped", seed=5)
    brownian = wrapgrad.to_sde(model, noise="brownian", seed=5)
    assert torch.equal(shaped(x), brownian(x))


def test_only_the_magnitude_of_the_map_matters() -> None:
    spec = get_registry().get("perturber", "attribution_shaped")
    p = spec.factory(sigma=0.5)
    a = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(p.prepare_guide(a), p.prepare_guide(-a))
    state = torch.zeros(3, 4, 4, 4)
    g = p.prepare_guide(a)
    one = p.increment(state, 0.25, generator=torch.Generator().manual_seed(1), guide=g)
    xi = torch.randn(state.shape, generator=torch.Generator().manual_seed(1))
    expected = 0.5 * 0.5 * nn.functional.adaptive_avg_pool2d(g, 4) * xi
    assert torch.allclose(one, expected, atol=1e-7)


# -- normalisation -------------------------------------------------------------------------------------
def test_normalisation_clips_the_stated_outliers_and_scales_to_unit_range() -> None:
    # -50 .. 49 and one outlier 1e4 (101 values). Sorted magnitudes: 0, 1, 1, 2, 2, ..., 49, 49,
    # 50, 1e4; the 99th percentile sits at position 0.99 * 100 = 99: the value 50.
    values = torch.cat([torch.arange(-50.0, 50.0), torch.tensor([1e4])])
    a = values[torch.randperm(101, generator=torch.Generator().manual_seed(0))].reshape(1, 101)
    out = normalise_attribution(a)
    assert torch.allclose(out, a.clamp(-50.0, 50.0) / 50.0, atol=1e-7)
    assert float(out[a == 1e4]) == 1.0  # the outlier is clipped, keeping its sign
    assert float(out[a == -50.0]) == -1.0
    assert float(out[a == 0.0]) == 0.0  # zero stays zero
    assert torch.allclose(out[a == 10.0], torch.tensor([0.2]))
    assert torch.allclose(out[a == -7.0], torch.tensor([-0.14]))
    # A stricter rule, the 90th percentile (position 90: the value 45), clips more.
    assert torch.allclose(normalise_attribution(a, 0.9), a.clamp(-45.0, 45.0) / 45.0, atol=1e-7)
    # No clipping with q = 1: division by the largest magnitude, 1e4.
    assert torch.allclose(normalise_attribution(a, 1.0), a / 1e4)
    # A non-negative map (Saliency) keeps its low end: nothing is raised.
    sal = torch.cat([torch.zeros(50), torch.arange(1.0, 51.0)]).reshape(1, 100)
    assert float(normalise_attribution(sal).min()) == 0.0
    # Fewer non-zero values than 1 %: the quantile is 0, so the largest magnitude scales.
    sparse = torch.zeros(1, 1000)
    sparse[0, 3] = -4.0
    assert torch.equal(normalise_attribution(sparse)[0, :5], torch.tensor([0.0, 0, 0, -1, 0]))


def test_normalisation_is_per_example_in_range_and_zero_maps_stay_zero() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 3, 7, 7, generator=g) * torch.tensor([1e-3, 1.0, 10.0, 1e3, 0.0]).view(
        5, 1, 1, 1
    )
    out = normalise_attribution(a)
    assert out.shape == a.shape
    assert float(out.abs().max()) <= 1.0
    assert torch.equal(out[4], torch.zeros(3, 7, 7))
    for i in range(4):
        assert float(out[i].abs().max()) == pytest.approx(1.0)  # the extreme reaches ±1
        assert torch.allclose(out[i], normalise_attribution(a[i : i + 1])[0])  # per example
    # Scale-free: a map times 1000 normalises to the same.
    assert torch.allclose(normalise_attribution(a[1:2] * 1e3), out[1:2], atol=1e-6)


def test_row_quantiles_match_torch_quantile() -> None:
    flat = torch.randn(4, 257, generator=torch.Generator().manual_seed(2))
    qs = (0.0, 0.01, 0.37, 0.99, 1.0)
    ours = row_quantiles(flat, qs)
    theirs = torch.quantile(flat, torch.tensor(qs), dim=1)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_carry_to_pools_and_broadcasts_by_hand() -> None:
    guide = torch.arange(16.0).reshape(1, 1, 4, 4)
    pooled = carry_to(guide, (1, 5, 2, 2))
    assert torch.equal(pooled, torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    assert carry_to(guide, (1, 3, 4, 4)) is guide  # same size: as it is, broadcast over channels
    assert torch.equal(guide_magnitude(torch.stack([guide[0, 0], -guide[0, 0]])[None]), guide)
    vec = torch.rand(2, 3)
    assert carry_to(vec, (2, 3)) is vec
    with pytest.raises(WrapgradError, match=r"^guide"):
        carry_to(vec, (2, 4))
    with pytest.raises(WrapgradError, match=r"^guide"):
        carry_to(guide, (1, 8))


# -- the guide store ------------------------------------------------------------------------------------
def test_stored_maps_follow_their_examples_through_shuffled_batches() -> None:
    model = make_resnet().train()
    sde = wrapgrad.to_sde(model, sigma=0.7, noise="attribution_shaped", seed=0)
    x = batch(8)
    maps = torch.ones_like(x)
    maps[:4] = 0.0  # examples 0-3: no noise at all
    sde.refresh_guide()  # a round has started: a guide model exists
    sde.add_guide(x, maps)
    order = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    incs = increments(sde, x[order])
    quiet = order < 4
    for name, inc in incs.items():
        assert torch.equal(inc[quiet], torch.zeros_like(inc[quiet])), name
        assert bool((inc[~quiet] != 0).all()), name


def test_refresh_guide_computes_maps_once_per_round_and_misses_on_demand() -> None:
    calls: list[int] = []

    def counting_saliency(model, inputs, target=None, **kw):
        calls.append(inputs.shape[0])
        inputs = inputs.detach().requires_grad_(True)
        out = model(inputs)
        picked = out.gather(1, target.view(-1, 1)).sum()
        return torch.autograd.grad(picked, inputs)[0].abs()

    model = make_resnet().train()
    sde = wrapgrad.to_sde(model, noise="attribution_shaped", guide_method=counting_saliency, seed=0)
    x = batch(6)
    raw = sde.refresh_guide(x[:4], target=torch.tensor([0, 1, 2, 3]))
    assert raw is not None
    assert raw.shape == (4, 1, 16, 16)
    assert calls == [4]
    assert len(sde.guide_store) == 4
    sde(x)  # two examples are new: computed on demand, once
    assert calls == [4, 2]
    assert len(sde.guide_store) == 6
    sde(x[torch.tensor([5, 0, 3])])
    assert calls == [4, 2]  # all cached
    sde.eval()
    sde.mc_samples = 2
    sde(x + 1.0)  # at inference new inputs are computed, not kept
    assert calls == [4, 2, 6]
    assert len(sde.guide_store) == 6
    sde.train()
    sde.refresh_guide()  # a new round forgets the maps of the old guide model
    assert len(sde.guide_store) == 0
    # The maps are the guide model's own: recompute them by hand.
    maps = sde.compute_guide(x[:2], target=torch.tensor([1, 1]))
    xx = x[:2].clone().requires_grad_(True)
    by_hand = torch.autograd.grad(sde.guide_model(xx)[:, 1].sum(), xx)[0].abs()
    assert torch.allclose(maps, by_hand)


def test_shaped_training_draws_are_seeded_too() -> None:
    model = make_resnet().train()
    x = batch()
    runs = []
    for seed in (0, 0, 1):
        sde = wrapgrad.to_sde(model, noise="attribution_shaped", seed=seed)
        sde.refresh_guide(x)
        runs.append(sde(x))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32),
        min_size=2,
        max_size=60,
    ),
    q=st.sampled_from([1.0, 0.99, 0.8, 0.5]),
)
def test_normalisation_keeps_zero_sign_and_order_within_unit_range(
    values: list[float], q: float
) -> None:
    a = torch.tensor(values).reshape(1, -1)
    out = normalise_attribution(a, q)
    assert bool(torch.isfinite(out).all())
    assert float(out.abs().max()) <= 1.0
    assert torch.equal(out[a == 0], torch.zeros_like(out[a == 0]))
    assert bool(((out * a) >= 0).all())  # no sign flips
    ranked = out[0, a.argsort(dim=1)[0]]
    assert bool((ranked.diff() >= 0).all())  # no order changes
    if bool((a != 0).any()):
        assert float(out.abs().max()) == 1.0  # the extreme reaches 1
    assert torch.allclose(normalise_attribution(-a, q), -out)


def test_shaped_monte_carlo_inference_uses_the_guide_per_example() -> None:
    model = make_resnet().eval()
    sde = wrapgrad.to_sde(model, sigma=0.8, noise="attribution_shaped", seed=0, mc_samples=4)
    x = batch(4)
    maps = torch.ones_like(x)
    maps[1] = 0.0  # example 1: no noise, so the average is its own softmax
    with sde.guided(maps):
        out = sde(x)
    plain = torch.log_softmax(model(x), dim=1)
    assert torch.allclose(out[1], plain[1], atol=1e-6)
    assert not torch.allclose(out[0], plain[0], atol=1e-3)
    with pytest.raises(WrapgradError, match=r"^guide"), sde.guided(maps):
        sde(x[:3])  # maps of 4 examples for a batch of 3
