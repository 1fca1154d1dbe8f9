"""Built-in plugin: noise-level calibration by relative accuracy drop, and FusionGrad heuristics.

Calibrators (``wrapgrad.calibrate(..., calibrator=name)``):

* ``accuracy_drop``: σ_NG (``perturber="weight"``) or α_SG (``perturber="input"``) with
  AD = target (Bykov et al. 2022, Eq. 5);
* ``halve``: both calibrated levels halved (FusionGrad);
* ``noisegrad++``: α_SG = 0.1 fixed, σ_NG calibrated on the joint drop (Eq. 6).

Records name each level once: ``sigma`` is σ_NG, ``noise_level`` α_SG.

Command: ``wrapgrad calibrate``.
"""

from __future__ import annotations

from collections.abc import Iterator

from wrapgrad import hookimpl
from wrapgrad.records import CalibratorSpec, CommandSpec
from wrapgrad_calibration.accuracy_drop import AccuracyDrop, NoisyAccuracy
from wrapgrad_calibration.bisection import BisectionResult, bisect_level
from wrapgrad_calibration.cli import add_calibrate_command, plot_curve
from wrapgrad_calibration.fusion import Halve, NoiseGradPlusPlus
from wrapgrad_calibration.statistics import drop_interval, relative_drop

__all__ = [
    "AccuracyDrop",
    "BisectionResult",
    "Halve",
    "NoiseGradPlusPlus",
    "NoisyAccuracy",
    "bisect_level",
    "drop_interval",
    "plot_curve",
    "relative_drop",
]


#: What a --smoke run keeps: few draws and iterations, and the drop measured relative to zero
#: accuracy (a one-epoch smoke model is near chance level, where AD is undefined).
_SMOKE = {"draws": 2, "max_iter": 6, "chance": 0.0}


@hookimpl
def wrapgrad_calibrators() -> list[CalibratorSpec]:
    return CalibratorSpec.from_rows("name factory summary", (
        ("accuracy_drop", AccuracyDrop,
         "Noise level with relative accuracy drop AD = target (NoiseGrad Eq. 5)."),
        ("halve", Halve, "FusionGrad: weight and input levels each calibrated, then halved."),
        ("noisegrad++", NoiseGradPlusPlus,
         "FusionGrad: input noise_level 0.1 fixed, sigma_NG calibrated on the joint drop (Eq. 6)."),
    ), smoke=_SMOKE)  # fmt: skip


@hookimpl
def wrapgrad_commands() -> Iterator[CommandSpec]:
    yield CommandSpec(
        name="calibrate",
        factory=add_calibrate_command,
        summary="Calibrate a reference model's noise level; print the record, plot the curve.",
        description="Find the noise level whose relative accuracy drop is --target-drop "
        "(Bykov et al. 2022, Eq. 5) for a reference model on its data set's test split.",
    )
