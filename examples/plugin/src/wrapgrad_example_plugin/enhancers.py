"""SmoothGrad with Laplace input noise, on wrapgrad's Monte-Carlo engine.

SmoothGrad (Smilkov et al. 2017) averages explanations of noisy copies of the input,

.. math::
    E_{LSG}(x) = \\frac1N \\sum_{j=1}^N E(x + \\xi_j),\\qquad
    \\xi_j \\sim \\mathrm{Laplace}(0, b)\\ \\text{element-wise},\\quad
    b = \\sigma / \\sqrt 2,\\quad \\sigma = \\alpha\\,(\\max x - \\min x),

with the noise level relative to each sample's range as in Bykov et al. (2022, Eq. 4); the
Laplace distribution has the Gaussian's standard deviation σ but heavier tails. The engine
(:func:`wrapgrad.engine.monte_carlo`) batches, chunks and seeds the draws.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from wrapgrad.checks import check_choice, check_nonnegative, check_positive_int
from wrapgrad.engine import monte_carlo

__all__ = ["LaplaceInput", "LaplaceSmoothGrad", "laplace_noise"]


def laplace_noise(
    shape: tuple[int, ...],
    scale: Tensor | float,
    *,
    generator: torch.Generator | None,
    device: Any = None,
) -> Tensor:
    """Laplace(0, ``scale``) draws by the inverse CDF, ``-b sign(v) log(1 - 2|v|)`` with ``v``
    uniform on (-1/2, 1/2), from ``generator`` only.

    >>> g = torch.Generator().manual_seed(0)
    >>> draws = laplace_noise((200_000,), 2.0, generator=g)
    >>> round(draws.abs().mean().item(), 1)  # E|ξ| = b
    2.0
    """
    v = torch.rand(shape, generator=generator, device=device) - 0.5
    tiny = torch.finfo(v.dtype).eps
    return -scale * torch.sign(v) * torch.log1p(-(2 * v.abs()).clamp(max=1 - tiny))


class LaplaceInput:
    """Laplace input noise ``x + ξ`` with standard deviation ``noise_level · (max x − min x)``
    per sample: an :class:`~wrapgrad.protocols.InputPerturber`.

    Args:
        noise_level: α (default 0.2); 0 switches the noise off (``is_zero``).

    >>> p = LaplaceInput(noise_level=0.1)
    >>> x = torch.zeros(2, 3)
    >>> p.sample(x, 4, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([4, 2, 3])
    """

    target = "input"

    def __init__(self, noise_level: float = 0.2) -> None:
        self.noise_level = check_nonnegative(noise_level, "noise_level")

    @property
    def is_zero(self) -> bool:
        return self.noise_level == 0.0

    def sample(self, x: Tensor, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` noisy copies of the batch ``x`` ``(B, ...)``: shape ``(n, B, ...)``."""
        n = check_positive_int(n, "n")
        out = x.detach().unsqueeze(0).expand(n, *x.shape)
        if self.is_zero:
            return out.clone()
        flat = x.detach().reshape(x.shape[0], -1)
        spread = (flat.amax(dim=1) - flat.amin(dim=1)).reshape(-1, *([1] * (x.dim() - 1)))
        scale = self.noise_level * spread / math.sqrt(2.0)
        return out + laplace_noise((n, *x.shape), scale, generator=generator, device=x.device).to(
            x.dtype
        )

    def __repr__(self) -> str:
        return f"LaplaceInput(noise_level={self.noise_level})"


class LaplaceSmoothGrad:
    """The enhancer: the mean (or mean of squares, or variance) of the explainer's maps over
    ``n_samples`` Laplace-noisy copies of the inputs.

    Args:
        n_samples: N (default 10).
        noise_level: α (default 0.2): the noise's standard deviation relative to each sample's
            range.
        aggregate: ``"mean"``, ``"mean_square"`` or ``"variance"``.
        seed: makes the draws repeatable; or ``generator``.
        generator: a ``torch.Generator`` on the inputs' device.
        max_batch: rows per explainer call (the engine's default if None).
        progress: show a progress bar (default: no).
    """

    name = "laplace_smoothgrad"

    def __init__(
        self,
        n_samples: int = 10,
        noise_level: float = 0.2,
        aggregate: str = "mean",
        seed: int | None = None,
        generator: torch.Generator | None = None,
        max_batch: int | None = None,
        progress: bool = False,
    ) -> None:
        self.n_samples = check_positive_int(n_samples, "n_samples")
        self.noise = LaplaceInput(noise_level)
        self.aggregate = check_choice(aggregate, "aggregate", ("mean", "mean_square", "variance"))
        self.seed, self.generator, self.max_batch = seed, generator, max_batch
        self.progress = progress

    def __call__(
        self, explainer: Any, model: Any, inputs: Any, target: Any = None, **kwargs: Any
    ) -> Any:
        return monte_carlo(
            explainer,
            model,
            inputs,
            target,
            input_sampler=self.noise,
            n_inputs=self.n_samples,
            aggregate=self.aggregate,
            seed=self.seed,
            generator=self.generator,
            max_batch=self.max_batch,
            progress=self.progress,
            attribute_kwargs=kwargs,
        )

    def __repr__(self) -> str:
        return f"LaplaceSmoothGrad(n_samples={self.n_samples}, {self.noise!r}, aggregate={self.aggregate!r})"
