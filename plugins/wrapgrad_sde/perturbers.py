"""State perturbers for neural SDEs: Brownian and attribution-shaped diffusion.

Both follow :class:`wrapgrad.protocols.StatePerturber`: ``increment(state, dt, generator=g,
guide=None)`` returns ``Σ(guide) √dt ξ`` with ξ ~ N(0, I) of ``state``'s shape, drawn from ``g``
only (``torch.randn(state.shape, generator=g)``), so the same generator state gives the same
increment.

References:
    Jha et al. (2022), *Shaping Noise for Robust Attributions in Neural Stochastic Differential
    Equations*, AAAI: ``dx = G(x, W) dt + Σ dB_t`` (Brownian) and ``Σ_next = Σ Â(x)``
    (attribution-driven).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from wrapgrad.checks import check_in_range, check_nonnegative
from wrapgrad.sde.normalise import (
    DEFAULT_OUTLIER_QUANTILE,
    carry_to,
    guide_magnitude,
    normalise_attribution,
)

__all__ = ["AttributionShaped", "Brownian"]


def _xi(state: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(state.shape, generator=generator, device=state.device, dtype=state.dtype)


class Brownian:
    """Constant diffusion: the increment ``Σ √dt ξ``, ξ ~ N(0, I) (Jha et al. 2022,
    ``dx = G dt + Σ dB_t`` with Σ not dependent on the attributions).

    Args:
        sigma: Σ (default 0.5, the paper's noise constant); 0 switches the noise off.

    Example::

        p = Brownian(sigma=0.5)
        inc = p.increment(state, 1 / 3, generator=torch.Generator().manual_seed(0))
    """

    target = "state"
    name = "brownian"
    needs_guide = False

    def __init__(self, sigma: float = 0.5) -> None:
        self.sigma = check_nonnegative(sigma, "sigma")

    @property
    def is_zero(self) -> bool:
        """True when Σ = 0."""
        return self.sigma == 0.0

    def increment(
        self,
        state: Tensor,
        dt: float,
        *,
        generator: torch.Generator | None = None,
        guide: Tensor | None = None,
    ) -> Tensor:
        """``Σ(guide) √dt ξ`` of ``state``'s shape (here ``Σ`` is constant: ``guide`` is not used)."""
        return (self.diffusion(state, guide) * math.sqrt(dt)) * _xi(state, generator)

    def diffusion(self, state: Tensor, guide: Tensor | None = None) -> float | Tensor:
        """``Σ`` for ``state``: the constant ``sigma``."""
        return self.sigma

    def __repr__(self) -> str:
        return f"Brownian(sigma={self.sigma})"


class AttributionShaped(Brownian):
    """Attribution-driven diffusion ``Σ_next = Σ Â(x)`` (Jha et al. 2022): the increment
    ``Σ · carry(|Â|) · √dt · ξ``.

    ``Â`` is each example's attribution map with magnitudes above the ``outlier_quantile`` of
    its ``|A|`` clipped, scaled to [-1, 1] (:func:`wrapgrad.sde.normalise.normalise_attribution`);
    only ``|Â|`` matters since ξ is symmetric. :meth:`prepare_guide` turns raw maps into ``|Â|``
    averaged over channels, once per map; :meth:`diffusion` average-pools it to the state's
    spatial size and broadcasts it over the state's channels
    (:func:`wrapgrad.sde.normalise.carry_to`). Without a guide (the first round of the iterative
    training, before any attribution exists) the noise is Brownian, as the paper starts from.

    Args:
        sigma: Σ (default 0.5).
        outlier_quantile: the outlier rule's quantile of ``|A|`` (default 0.99; 1: no clipping).
    """

    name = "attribution_shaped"
    needs_guide = True

    def __init__(
        self, sigma: float = 0.5, outlier_quantile: float = DEFAULT_OUTLIER_QUANTILE
    ) -> None:
        super().__init__(sigma)
        self.outlier_quantile = check_in_range(
            outlier_quantile, "outlier_quantile", 0.0, 1.0, low_open=True
        )

    def prepare_guide(self, maps: Tensor) -> Tensor:
        """Raw attribution maps ``(B, C, *spatial)`` -> ``|Â|`` averaged over channels
        ``(B, 1, *spatial)`` (``(B, D)`` maps of vector inputs stay ``(B, D)``)."""
        return guide_magnitude(normalise_attribution(maps, self.outlier_quantile))

    def diffusion(self, state: Tensor, guide: Tensor | None = None) -> float | Tensor:
        """``Σ · carry(guide)`` at ``state``'s resolution; ``Σ`` without a guide."""
        if guide is None:
            return self.sigma
        return self.sigma * carry_to(guide.to(state.dtype), state.shape)

    def __repr__(self) -> str:
        return f"AttributionShaped(sigma={self.sigma}, outlier_quantile={self.outlier_quantile})"
