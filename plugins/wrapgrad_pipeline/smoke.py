"""``--smoke``: every size shrunk so that a pipeline runs end to end in seconds (CI).

Components declare what a smoke run keeps of their options (``Spec.smoke``, e.g. an enhancer's
``{"n_samples": 2}``, a Quantus metric's ``{"nr_runs": 2}``); :func:`~wrapgrad.options.capped`
(re-exported here) applies them. The
pipeline's own sizes (evaluated samples, training epochs, ...) are :data:`SIZES`; each step's
``shrink`` uses both.
"""

from __future__ import annotations

from typing import Any

from wrapgrad.options import capped

__all__ = ["FALLBACK_LEVELS", "SIZES", "capped"]

#: The pipeline's own sizes in a smoke run.
SIZES: dict[str, Any] = {
    "samples": 6,  # evaluated samples ([data].samples, metric samples)
    "calibration_samples": 64,
    "attack_samples": 4,
    "epochs": 1,  # recipe training
    "train_items": 256,  # recipe training set (dataset_options.limit)
    "grid_samples": 2,
    "replicates": 2,  # enhancer seeds ([explain].replicates)
    "sweep_levels": 2,  # noise levels per sweep curve
}
#: Noise levels a smoke run uses where calibrating its barely trained model fails.
FALLBACK_LEVELS = {"sigma": 0.1, "noise_level": 0.1}
