"""Neural SDEs (Jha et al. 2022): stochastic residual blocks and the converter ``to_sde``.

* :mod:`wrapgrad.sde.blocks`: the Euler-Maruyama step and :class:`StochasticBlock`;
* :mod:`wrapgrad.sde.convert`: :func:`to_sde`, finding residual blocks, :class:`SDEConfig`;
* :mod:`wrapgrad.sde.model`: :class:`NeuralSDE`, the converted model (generator, guide maps,
  Monte-Carlo inference);
* :mod:`wrapgrad.sde.normalise`: the attribution normalisation and its carrying to blocks;
* :mod:`wrapgrad.sde.guide`: per-example guide maps stored by content between rounds;
* :mod:`wrapgrad.sde.training`: :func:`train_sde`, the paper's iterative training (train,
  recompute the maps, reshape the noise, repeat) on :func:`wrapgrad.train`.

The noise itself (``brownian``, ``attribution_shaped``) comes from plugins, as
``PerturberSpec(target="state")`` components; see ``docs/sde.md``.
"""

from __future__ import annotations

from wrapgrad.sde.blocks import StochasticBlock, euler_maruyama_step
from wrapgrad.sde.convert import SDEConfig, find_residual_blocks, is_residual_block, to_sde
from wrapgrad.sde.model import NeuralSDE
from wrapgrad.sde.normalise import carry_to, guide_magnitude, normalise_attribution
from wrapgrad.sde.training import PAPER_LOOP, RoundRecord, RoundsConfig, SDETrainResult, train_sde

__all__ = [
    "PAPER_LOOP",
    "NeuralSDE",
    "RoundRecord",
    "RoundsConfig",
    "SDEConfig",
    "SDETrainResult",
    "StochasticBlock",
    "carry_to",
    "euler_maruyama_step",
    "find_residual_blocks",
    "guide_magnitude",
    "is_residual_block",
    "normalise_attribution",
    "to_sde",
    "train_sde",
]
