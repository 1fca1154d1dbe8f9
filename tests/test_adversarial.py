"""The pure adversarial kernels (wrapgrad.adversarial): projection, random starts, PGD."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from wrapgrad.adversarial import check_norm, pgd, project, random_start, step_direction
from wrapgrad.errors import WrapgradValueError


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


@settings(max_examples=25, deadline=None)
@given(
    epsilon=st.floats(0.01, 0.6),
    steps=st.integers(1, 6),
    norm=st.sampled_from(["linf", "l2"]),
    bounded=st.booleans(),
    start=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_pgd_iterates_stay_in_the_ball_and_the_bounds(epsilon, steps, norm, bounded, start, seed):
    model = _net()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 3, 4, generator=g)
    y = torch.randint(0, 3, (4,), generator=g)
    bounds = (0.0, 1.0) if bounded else None
    seen: list[torch.Tensor] = []

    def loss(z: torch.Tensor) -> torch.Tensor:
        seen.append(z.detach().clone())
        return F.cross_entropy(model(z), y, reduction="none")

    out = pgd(
        loss, x, epsilon=epsilon, step_size=epsilon / 2, steps=steps, norm=norm, bounds=bounds,
        random_start=start, generator=g,
    )  # fmt: skip
    for z in [*seen, out]:  # every iterate the loss saw, and the result
        d = (z - x).reshape(4, -1)
        size = d.abs().amax(dim=1) if norm == "linf" else d.norm(dim=1)
        assert bool((size <= epsilon * (1 + 1e-5) + 1e-7).all())
        if bounded:
            assert float(z.min()) >= 0.0
            assert float(z.max()) <= 1.0
    assert not out.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_linf_pgd_on_a_linear_loss_is_a_corner_of_the_ball() -> None:
    """max_z w . z over ||z - x||_inf <= eps is x + eps sign(w); PGD reaches it in one step."""
    w = torch.tensor([1.0, -2.0, 0.5, -0.1])
    x = torch.full((2, 4), 0.5)
    out = pgd(lambda z: z @ w, x, epsilon=0.2, step_size=0.3, steps=3, bounds=(0.0, 0.6))
    want = (x + 0.2 * w.sign()).clamp(0.0, 0.6)
    torch.testing.assert_close(out, want)
    # l_2: the maximiser is x + eps w / |w|
    out2 = pgd(lambda z: z @ w, x, epsilon=0.2, step_size=0.5, steps=2, norm="l2")
    torch.testing.assert_close(out2, x + 0.2 * w / w.norm())


def test_keep_refuses_steps_and_stops_those_samples() -> None:
    w = torch.tensor([1.0, 1.0])
    x = torch.zeros(3, 2)
    calls = []

    def keep(z: torch.Tensor) -> torch.Tensor:  # sample 1 may never move; sample 2 only once
        calls.append(z.clone())
        ok = torch.tensor([True, False, True])
        if len(calls) > 1:
            ok[2] = False
        return ok

    out = pgd(lambda z: z @ w, x, epsilon=1.0, step_size=0.1, steps=4, keep=keep)
    torch.testing.assert_close(out[0], torch.full((2,), 0.4))
    torch.testing.assert_close(out[1], torch.zeros(2))
    torch.testing.assert_close(out[2], torch.full((2,), 0.1))


def test_random_start_is_uniform_in_the_ball_and_seeded() -> None:
    x = torch.zeros(2000, 3)
    a = random_start(x, 0.3, "linf", torch.Generator().manual_seed(1))
    b = random_start(x, 0.3, "linf", torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert float(a.abs().max()) <= 0.3
    assert abs(float(a.mean())) < 0.01
    assert abs(float(a.abs().mean()) - 0.15) < 0.01  # mean of |U(-eps, eps)| is eps / 2
    r = random_start(x, 0.3, "l2", torch.Generator().manual_seed(1)).norm(dim=1)
    assert float(r.max()) <= 0.3 * (1 + 1e-6)
    # uniform in a 3-ball: P(|r| <= eps / 2) = 1/8
    assert abs(float((r <= 0.15).float().mean()) - 0.125) < 0.03


def test_step_direction_project_and_norm_names() -> None:
    g = torch.tensor([[3.0, -4.0], [0.0, 0.0]])
    assert torch.equal(step_direction(g, "linf"), torch.tensor([[1.0, -1.0], [0.0, 0.0]]))
    torch.testing.assert_close(step_direction(g, "l2")[0], torch.tensor([0.6, -0.8]))
    x = torch.zeros(1, 2)
    torch.testing.assert_close(
        project(torch.tensor([[3.0, 4.0]]), x, 1.0, "l2", None), torch.tensor([[0.6, 0.8]])
    )
    assert [check_norm(n) for n in ("linf", "l_inf", "∞", "l2", 2)] == ["linf"] * 3 + ["l2"] * 2
    with pytest.raises(WrapgradValueError, match=r"^norm"):
        check_norm("l1")
