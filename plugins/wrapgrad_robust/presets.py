"""Presets: objective and loop options for :func:`wrapgrad.train` at two scales.

* ``"paper"``: the seeds' MNIST settings: FAR Tables 2-3 (Adam, batch 50, 50 epochs; lr 1e-3
  for Nat, 1e-4 for Adv/AAT/AdvAAT; λ = 0.5; IFIA with 7 steps of 1.2 ε / 7, k = 50, β = 1),
  Madry's PGD (ε = 0.3, 40 steps of 0.01, random start) and RAR (λ = 1, β = 0.1; trained as
  FAR trains its robust models, which the RAR lecture does not specify).
* ``"embedded"``: the small CNN on the 4,000 embedded MNIST training digits, the robust
  objectives fine-tuning the recipe-trained natural model (as FAR fine-tunes; ``natural`` is the
  recipe itself) in a few minutes of CPU each: the embedded-scale ε = 0.2, 3 inner steps and 4
  IG points for the attribution objectives, one to three epochs. Chosen by the pilot in
  ``docs/training.md`` (``benchmarks/pilot_robust_mnist.py``).

Example::

    from wrapgrad_robust.presets import preset
    wrapgrad.train(model, data, "adv_aat", **preset("adv_aat", "embedded"))
"""

from __future__ import annotations

from typing import Any

from wrapgrad.errors import UnknownNameError

__all__ = ["PRESETS", "SCALES", "preset"]

SCALES = ("embedded", "paper")

_PAPER_LOOP = {"optimizer": "adam", "batch_size": 50, "epochs": 50}
_IFIA = {"epsilon": 0.3, "steps": 7, "k": 50, "softplus_beta": 1.0}
#: The embedded scale: the robust objectives fine-tune with Adam at ε = 0.2 (one epoch unless
#: said); the attribution objectives take 3 inner steps and 4 IG points.
_FINE_TUNE = {"optimizer": "adam", "batch_size": 50, "epochs": 1, "lr": 5e-4, "epsilon": 0.2}
_ATTRIBUTION = {"steps": 3, "ig_steps": 4}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {
        "natural": {**_PAPER_LOOP, "lr": 1e-3},
        "pgd": {**_PAPER_LOOP, "lr": 1e-4, "epsilon": 0.3, "steps": 40, "step_size": 0.01},
        "ig_norm": {**_PAPER_LOOP, "lr": 1e-4, "lam": 1.0, "epsilon": 0.3},
        "ig_sum_norm": {**_PAPER_LOOP, "lr": 1e-4, "beta": 0.1, "epsilon": 0.3},
        "aat": {**_PAPER_LOOP, "lr": 1e-4, "lam": 0.5, **_IFIA},
        "adv_aat": {**_PAPER_LOOP, "lr": 1e-4, "lam": 0.5, **_IFIA},
    },
    "embedded": {
        "natural": {
            "optimizer": "adamw", "scheduler": "one_cycle", "batch_size": 64, "epochs": 12,
            "lr": 5e-3, "weight_decay": 1e-4,
        },
        "pgd": {**_FINE_TUNE, "epochs": 3, "lr": 1e-3, "steps": 7, "step_size": 0.05},
        "ig_norm": {**_FINE_TUNE, **_ATTRIBUTION, "lam": 1.0, "step_size": 0.08},
        "ig_sum_norm": {**_FINE_TUNE, **_ATTRIBUTION, "beta": 0.1, "step_size": 0.08},
        "aat": {**_FINE_TUNE, **_ATTRIBUTION, "lam": 2.0, "k": 50},
        "adv_aat": {**_FINE_TUNE, **_ATTRIBUTION, "epochs": 2, "lr": 1e-3, "lam": 1.0, "k": 50},
    },
}  # fmt: skip


def preset(objective: str, scale: str = "embedded") -> dict[str, Any]:
    """The options of ``objective`` at ``scale`` (loop and objective options together, ready
    for ``wrapgrad.train(model, data, objective, **preset(...))``); an objective without a
    preset gets ``{}`` (its own defaults)."""
    if scale not in PRESETS:
        raise UnknownNameError("scale", scale, PRESETS, what="preset scale")
    return dict(PRESETS[scale].get(objective, {}))
