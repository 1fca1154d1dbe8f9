"""torchsde's Euler-Maruyama solver (a maintained SDE library, used here only as an oracle)
integrates the SDE of a converted toy ResNet with the same Brownian increments, and lands where
the converted model's blocks land."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import wrapgrad
from wrapgrad.registry import get_registry
from wrapgrad.sde import euler_maruyama_step

from .test_sde import MLP, Residual

torchsde = pytest.importorskip("torchsde")


class GivenIncrements(torchsde.BaseBrownian):
    """Brownian motion whose increment over step k is the given ``dW[k]``."""

    def __init__(self, dW: list[torch.Tensor], dt: float) -> None:
        self.dW = dW
        self.dt = dt

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        return self.dW[round(float(ta) / self.dt)]

    def __repr__(self) -> str:
        return "GivenIncrements()"

    dtype = property(lambda self: self.dW[0].dtype)
    device = property(lambda self: self.dW[0].device)
    shape = property(lambda self: self.dW[0].shape)
    levy_area_approximation = property(lambda self: "none")


class ToySDE(nn.Module):
    """dx = G_k(x) dt + Σ dB with G_k = F_k / δt on [k δt, (k+1) δt): the ResNet's ODE view."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, blocks: nn.Sequential, sigma: float, dt: float) -> None:
        super().__init__()
        self.blocks, self.sigma, self.dt = blocks, sigma, dt

    def f(self, t, y):
        block = self.blocks[min(round(float(t) / self.dt), len(self.blocks) - 1)]
        return (block(y) - y) / self.dt

    def g(self, t, y):
        return torch.full_like(y, self.sigma)


@pytest.mark.parametrize("dt", [0.25, 1.0])
def test_the_converted_toy_is_torchsdes_euler_maruyama_with_the_same_increments(dt: float) -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        toy = MLP(d=2, depth=4).double()
    sigma = 0.3
    sde = wrapgrad.to_sde(
        toy, sigma=sigma, dt=dt, seed=11, blocks=lambda n, m: isinstance(m, Residual)
    ).train()
    y0 = torch.randn(5, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    # The documented draw: one seed from the model's generator per pass, then the blocks draw
    # ξ_k ~ N(0, I) of the state's shape in order from a generator with that seed.
    source = torch.Generator()
    source.set_state(sde.rng_state())
    seed = int(torch.randint(0, 2**62, (1,), generator=source))
    g = torch.Generator().manual_seed(seed)
    dW = [math.sqrt(dt) * torch.randn((5, 2), generator=g, dtype=torch.float64) for _ in range(4)]
    states: list[torch.Tensor] = []
    handle = sde.net.blocks.register_forward_hook(lambda m, i, o: states.append(o.detach()))
    with torch.no_grad():
        sde(y0)
        ts = torch.tensor([k * dt for k in range(5)], dtype=torch.float64)
        oracle = torchsde.sdeint(
            ToySDE(toy.blocks, sigma, dt), y0, ts, bm=GivenIncrements(dW, dt), method="euler", dt=dt
        )
    handle.remove()
    assert torch.allclose(states[0], oracle[-1], atol=1e-12, rtol=0)
    # And step by step, with the public kernel.
    brownian = get_registry().get("perturber", "brownian").factory(sigma=sigma)
    g = torch.Generator().manual_seed(seed)
    y = y0
    with torch.no_grad():
        for k, block in enumerate(toy.blocks):
            y = euler_maruyama_step(block(y), brownian, dt, generator=g)
            assert torch.allclose(y, oracle[k + 1], atol=1e-12, rtol=0), k
