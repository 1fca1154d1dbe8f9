"""The noise the engine actually applies, checked statistically (end-to-end scores cannot catch
noise on the wrong axis).

* Weight noise (NoiseGrad, Bykov et al. 2022 Eq. 1): ``W_k = Ŵ ⊙ η_k``, η ~ N(1, σ²) element-wise,
  so ``z = (W_k − Ŵ) / (σ |Ŵ|)`` is standard normal, independent across fan-in (input channels),
  kernel positions, output channels and weight samples; every image of a batch is explained with
  the same weight sample (one model per draw).
* Input noise (SmoothGrad, Eq. 4): ``x + ξ``, ξ ~ N(0, σ_b²) with σ_b = α (max x_b − min x_b) per
  image, so ``z = ξ / σ_b`` is standard normal, independent across pixels, channels, images and
  samples.

Each check uses enough draws for tolerances of a few standard errors, and tests the correlation
structure explicitly: a sampler that reused one draw along an axis would put ones off the
diagonal of the corresponding correlation matrix.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from wrapgrad_noise.perturbers import InputGaussian, WeightMultiplicative

from wrapgrad.engine import monte_carlo
from wrapgrad.engine.plan import Chunk
from wrapgrad.engine.rng import derive_seeds, make_generator
from wrapgrad.engine.sampler import Sampler

SIGMA, ALPHA = 0.3, 0.1


def corr(samples: torch.Tensor) -> torch.Tensor:
    """The empirical correlation matrix of the columns of ``samples`` ``(n, d)``."""
    return torch.corrcoef(samples.T.double())


def assert_identity(c: torch.Tensor, n: int, what: str) -> None:
    """Off-diagonal correlations of ``n`` independent pairs have standard error ~1/√n."""
    off = c - torch.eye(c.shape[0], dtype=c.dtype)
    worst = float(off.abs().max())
    assert worst < 5 / n**0.5, f"{what}: largest off-diagonal correlation {worst:.4f}"


def assert_independent_along(z: torch.Tensor, dim: int, what: str) -> None:
    """The entries along ``dim`` are uncorrelated (every other axis gives the observations)."""
    cols = z.movedim(dim, -1).reshape(-1, z.shape[dim])
    assert_identity(corr(cols), cols.shape[0], what)


def assert_standard_normal(z: torch.Tensor, what: str) -> None:
    n = z.numel()
    assert abs(float(z.mean())) < 5 / n**0.5, f"{what}: mean {float(z.mean()):.4f}"
    assert abs(float(z.std()) - 1) < 5 * (0.5 / n) ** 0.5, f"{what}: std {float(z.std()):.4f}"
    # A Gaussian's fourth moment is 3 (a uniform or two-point draw would fail this).
    k4 = float((z.double() ** 4).mean())
    assert abs(k4 - 3) < 5 * (96 / n) ** 0.5, f"{what}: fourth moment {k4:.3f}"


class Conv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3)
        with torch.no_grad():  # magnitudes spanning two orders, both signs, no zeros
            w = torch.linspace(0.05, 5.0, self.conv.weight.numel()).reshape(self.conv.weight.shape)
            sign = torch.where(torch.arange(w.numel()).reshape(w.shape) % 3 == 0, -1.0, 1.0)
            self.conv.weight.copy_(w * sign)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).flatten(1)


def test_weight_noise_is_elementwise_sigma_w_and_uncorrelated() -> None:
    model = Conv()
    w = model.conv.weight.detach()
    k = 3000
    x = torch.zeros(1, 4, 5, 5)
    seeds = derive_seeds(make_generator("cpu", seed=0), (k, 2))
    sampler = Sampler(model, (x,), seeds, WeightMultiplicative(SIGMA, include="conv.weight"))
    drawn = torch.stack([sampler.weights(i)["conv.weight"] for i in range(k)])  # (K, 6, 4, 3, 3)
    assert torch.equal(w, model.conv.weight.detach())  # the model is never touched
    z = (drawn - w) / (SIGMA * w.abs())
    assert_standard_normal(z, "weight noise / (σ|w|)")
    # Mean W and element-wise std σ|W|, for small and large weights alike.
    per_element_std = (drawn - w).std(0) / (SIGMA * w.abs())
    assert float((per_element_std - 1).abs().max()) < 6 * (0.5 / k) ** 0.5
    mean_err = (drawn.mean(0) - w) / (SIGMA * w.abs() / k**0.5)
    assert float(mean_err.abs().max()) < 5
    # No correlation across fan-in (input channels), kernel positions, output channels, copies.
    assert_independent_along(z, 2, "across input channels")
    assert_independent_along(z.reshape(k, 6, 4, 9), 3, "across kernel positions")
    assert_independent_along(z, 1, "across output channels")
    assert_independent_along(z.reshape(k // 8, 8, -1), 1, "across weight samples")


def test_weight_noise_is_one_model_per_draw_for_every_image() -> None:
    # Saliency of the linear model y = W x for output t is the row W_t ⊙ η_t of the draw's
    # weights: the same for every image of the batch (one model per draw, Eq. 1), and another
    # one for the next draw.
    model = nn.Linear(5, 3, bias=False).eval()
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))

    def grad_of_output_0(m, inputs, target=None):  # type: ignore[no-untyped-def]
        t = inputs.detach().requires_grad_()
        (g,) = torch.autograd.grad(m(t)[:, 0].sum(), t)
        return g

    samples = monte_carlo(
        grad_of_output_0, model, x, None, weight_sampler=WeightMultiplicative(SIGMA),
        n_models=400, seed=1, return_samples=True,
    ).samples  # fmt: skip
    assert samples.shape == (400, 4, 5)
    torch.testing.assert_close(samples, samples[:, :1].expand_as(samples))
    z = (samples[:, 0] - model.weight[0].detach()) / (SIGMA * model.weight[0].detach().abs())
    assert_standard_normal(z, "the weights each draw explains")
    assert_identity(corr(z), z.shape[0], "across the fan-in of one output")


@pytest.mark.parametrize("max_batch", [8, 10_000])
def test_input_noise_is_alpha_range_per_image_and_independent(max_batch: int) -> None:
    # The per-sample inputs as the explainer receives them (an identity explainer), chunked.
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([0.5, 2.0, 10.0, 40.0]).reshape(4, 1, 1, 1)
    x = torch.rand(4, 3, 6, 6, generator=g) * scale - scale / 3  # ranges differ per image
    span = (x.reshape(4, -1).amax(1) - x.reshape(4, -1).amin(1)).reshape(4, 1, 1, 1)
    n = 2000

    def identity(m, inputs, target=None):  # type: ignore[no-untyped-def]
        return inputs

    res = monte_carlo(
        identity, nn.Identity(), x, None, input_sampler=InputGaussian(noise_level=ALPHA),
        n_inputs=n, seed=2, return_samples=True, max_batch=max_batch,
    )  # fmt: skip
    z = (res.samples - x) / (ALPHA * span)  # (N, 4, 3, 6, 6)
    assert_standard_normal(z, "input noise / (α range)")
    # Std α (max x − min x) per image (not one σ for the batch): each image on its own.
    per_image = z.transpose(0, 1).reshape(4, -1).std(1)
    assert float((per_image - 1).abs().max()) < 5 * (0.5 / (n * 108)) ** 0.5
    # Mean 0 per element: the noisy copies centre on x.
    assert float(z.mean(0).abs().max()) < 5 / n**0.5
    # Independent per pixel, channel, image and sample.
    assert_independent_along(z.reshape(n, 4, 3, 36), 3, "across pixels")
    assert_independent_along(z, 2, "across channels")
    assert_independent_along(z, 1, "across images")
    assert_independent_along(z.reshape(n // 10, 10, -1), 1, "across samples")


def test_a_sampler_reusing_noise_across_channels_fails_the_check() -> None:
    # The correlation check has power: the same draw for every channel gives ones off the
    # diagonal (what a broadcasting bug would do).
    z = torch.randn(4000, 1).expand(4000, 3)
    with pytest.raises(AssertionError, match="across channels"):
        assert_identity(corr(z + 1e-3 * torch.randn(4000, 3)), 4000, "across channels")


def test_fusiongrad_draws_fresh_input_noise_for_each_weight_sample() -> None:
    # Eq. 2 with ξ_ij drawn anew per weight sample i: the input draws of different weight samples
    # are independent, not one shared set.
    x = torch.zeros(2, 50)
    seeds = derive_seeds(make_generator("cpu", seed=3), (200, 3))
    sampler = Sampler(nn.Identity(), (x,), seeds, None, InputGaussian(input_sigma=1.0))
    noise = torch.stack(
        [sampler.inputs_for(Chunk((k,), 0, 2))[0].reshape(2, 2, 50) for k in range(200)]
    )  # (K, N, B, D)
    assert_independent_along(noise[:, 0].reshape(100, 2, -1), 1, "across weight samples")
    assert_independent_along(noise, 1, "across input samples of one model")
