"""Stochastic residual blocks: each block is one Euler-Maruyama step of a neural SDE.

A residual block ``x_{k+1} = x_k + F(x_k, W_k)`` is the Euler step of ``dx/dt = G(x, W)`` with
``G = F / δt`` (Jha et al. 2022, "Technical Approach"; Weinan 2017). Adding a diffusion turns it
into the Itô process ``dx = G(x, W) dt + Σ dB_t``, whose Euler-Maruyama step is

.. math:: x_{k+1} = \\underbrace{x_k + F(x_k, W_k)}_{\\Phi_k(x_k)} + \\Sigma\\,\\sqrt{\\delta t}\\,\\xi_k,
          \\qquad \\xi_k \\sim \\mathcal N(0, I).

The drift term ``G δt`` is the block's own output ``Φ_k(x_k)`` (never ``F / δt · δt``), so
``δt`` only scales the noise and ``Σ = 0`` is the plain network bit for bit, whatever ``δt``.

Where the noise goes: on the block's *output*, after everything the block computes. For the
He et al. (2016) post-activation blocks (torchvision's and timm's ``BasicBlock`` /
``Bottleneck``, wrapgrad's ``small_resnet``), ``Φ(x) = relu(residual(x) + shortcut(x))``, so the
increment is added after the shortcut sum and after the final ReLU, at the block's output
resolution (after any stride). This is the one placement that is the same for every block,
user-marked modules whose insides wrapgrad does not know included, and it makes the injected
increment exactly ``Σ √δt ξ`` (inside the ReLU, the ReLU would truncate it and its law would no
longer be the SDE's).
"""

from __future__ import annotations

from typing import Any

import attrs
import torch
from torch import Tensor, nn

from wrapgrad.errors import WrapgradTypeError, WrapgradValueError
from wrapgrad.protocols import StatePerturber

__all__ = ["NoisePass", "StochasticBlock", "euler_maruyama_step"]


def euler_maruyama_step(
    drift_output: Tensor,
    perturber: StatePerturber,
    dt: float,
    *,
    generator: torch.Generator | None = None,
    guide: Tensor | None = None,
    shared: bool = False,
) -> Tensor:
    """``x_{k+1} = Φ_k(x_k) + Σ √δt ξ_k``: one Euler-Maruyama step from a block's output.

    Args:
        drift_output: ``Φ_k(x_k)``, the deterministic block's output ``(B, ...)``.
        perturber: the :class:`~wrapgrad.protocols.StatePerturber` giving ``Σ √δt ξ``.
        dt: the time step ``δt`` (> 0).
        generator: the only source of ``ξ``.
        guide: the batch's guide for a shaped perturber (as its ``prepare_guide`` returned it).
        shared: draw one ``ξ`` of a single row and broadcast it over the batch (common random
            numbers for Monte-Carlo inference: every example sees the same noisy network).

    Returns:
        The next state, the shape of ``drift_output``; ``drift_output`` itself when the
        perturber is zero (no addition, so ``Σ = 0`` is bit for bit the deterministic step).
    """
    if perturber.is_zero:
        return drift_output
    state = drift_output[:1] if shared else drift_output
    increment = perturber.increment(state, dt, generator=generator, guide=guide)
    out = drift_output + increment
    if out.shape != drift_output.shape:
        raise WrapgradValueError(
            f"noise: the perturber returned an increment of shape {tuple(increment.shape)} for a "
            f"state of shape {tuple(drift_output.shape)}"
        )
    return out


@attrs.define(slots=True)
class NoisePass:
    """What the blocks of one noisy forward pass share: the perturber, ``δt``, the generator,
    the batch's guide and whether draws are shared across the batch. Built by
    :class:`~wrapgrad.sde.model.NeuralSDE` for each pass; blocks hold it only during that pass."""

    perturber: StatePerturber
    dt: float
    generator: torch.Generator
    guide: Tensor | None = None
    shared: bool = False


class StochasticBlock(nn.Module):
    """A residual block made one Euler-Maruyama step: ``block(x) + Σ √δt ξ`` during a noisy
    pass of its :class:`~wrapgrad.sde.model.NeuralSDE`, exactly ``block(x)`` otherwise.

    Attributes:
        block: the (copied) deterministic block ``Φ_k``.
        index: ``k``, the block's position in the network (0-based).
        name: its qualified name in the converted network.
    """

    def __init__(self, block: nn.Module, index: int, name: str) -> None:
        super().__init__()
        self.block = block
        self.index = index
        self.name = name
        self.noise_pass: NoisePass | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.block(*args, **kwargs)
        p = self.noise_pass
        if p is None:
            return out
        if not isinstance(out, Tensor):
            raise WrapgradTypeError(
                f"blocks: {self.name!r} returned {type(out).__name__}; a stochastic block needs a "
                f"module whose forward returns the next state as one tensor"
            )
        return euler_maruyama_step(
            out, p.perturber, p.dt, generator=p.generator, guide=p.guide, shared=p.shared
        )

    def extra_repr(self) -> str:
        return f"index={self.index}"
