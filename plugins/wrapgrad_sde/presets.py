"""Presets for :func:`wrapgrad.sde.train_sde`: round and loop options at two scales.

* ``"paper"``: Jha et al. (2022), "Experimental Results": Adam, learning rate 1e-4,
  ``ReduceLROnPlateau`` (factor and patience not given: torch's defaults), rounds until the
  training loss stops improving. The batch size and the round length are not given either; a
  round of 4 epochs keeps the map refreshes within the paper's measured 36% (see
  ``benchmarks/bench_sde.py``).
* ``"embedded"``: the embedded ``small_resnet`` trained from scratch on the 4,000 CMNIST-like
  training images (3x32x32) in about a minute of CPU per model: a fixed budget of 3 rounds of 3
  epochs (``patience=None``, so the three models of the comparison get the same budget),
  learning rate 1e-3 (1e-4 reaches 22% test accuracy after 8 epochs, 1e-3 74%: the pilot in
  ``docs/sde.md``), the plateau schedule halving the rate after an epoch without improvement.

Example::

    from wrapgrad.sde import train_sde
    from wrapgrad_sde.presets import preset
    train_sde(sde, (x, y), **preset("embedded"))
"""

from __future__ import annotations

from typing import Any

from wrapgrad.errors import UnknownNameError

__all__ = ["PRESETS", "SCALES", "preset"]

SCALES = ("embedded", "paper")

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "optimizer": "adam", "lr": 1e-4, "scheduler": "plateau", "batch_size": 64,
        "rounds": 25, "epochs_per_round": 4, "patience": 1,
    },
    "embedded": {
        "optimizer": "adam", "lr": 1e-3, "scheduler": "plateau", "batch_size": 64,
        "scheduler_options": {"factor": 0.5, "patience": 0},
        "rounds": 3, "epochs_per_round": 3, "patience": None,
    },
}  # fmt: skip


def preset(scale: str = "embedded") -> dict[str, Any]:
    """The options of :func:`wrapgrad.sde.train_sde` at ``scale`` (a copy)."""
    if scale not in PRESETS:
        raise UnknownNameError("scale", scale, PRESETS, what="preset scale")
    out = dict(PRESETS[scale])
    if "scheduler_options" in out:
        out["scheduler_options"] = dict(out["scheduler_options"])
    return out
