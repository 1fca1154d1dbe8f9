"""FusionGrad noise heuristics (Bykov et al. 2022, "Heuristics for hyperparameter setting" and
appendix "NoiseGrad++").

* ``halve``: calibrate σ_NG (weight noise) and α_SG (input noise) each to the target drop, then
  halve both, "to equal the contribution from the input perturbation and the model
  perturbation". ``noise_level=`` replaces the input calibration by a fixed α_SG (the paper's
  SmoothGrad rule, Eq. 4, uses 0.2; ``input_alpha=`` before 0.1, deprecated).
* ``noisegrad++``: fix α_SG = ``noise_level`` = 0.1 (``alpha=`` before 0.1, deprecated) and calibrate σ_NG so that the joint relative drop

  .. math:: AD_{++}(\\sigma_{SG}, \\sigma_{NG}) = 1 - \\frac{ACC_{++}(\\sigma_{SG}, \\sigma_{NG})
            - ACC(\\infty)}{ACC_{++}(0, 0) - ACC(\\infty)}

  (Eq. 6) reaches the target (the paper: 5%).

Both return a :class:`~wrapgrad.calibration.CalibrationResult` with ``perturber="fusion"``,
``sigma`` = σ_NG and ``noise_level`` = α_SG, its ``drop`` the joint drop measured at both
levels.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch
from torch import nn

from wrapgrad.calibration import (
    CalibrationResult,
    check_target_drop,
    evaluation_mode,
    prepare_data,
)
from wrapgrad.errors import WrapgradValueError
from wrapgrad_calibration.accuracy_drop import AccuracyDrop, NoisyAccuracy, renamed_option
from wrapgrad_calibration.statistics import drop_interval, relative_drop

__all__ = ["Halve", "NoiseGradPlusPlus"]


class NoiseGradPlusPlus:
    """σ_NG for a joint drop AD₊₊ = target with the input noise fixed at α_SG (default 0.1)."""

    name = "noisegrad++"

    def __call__(
        self,
        model: nn.Module,
        data: Any,
        *,
        perturber: str = "weight",
        target_drop: float = 0.05,
        noise_level: float = 0.1,
        alpha: float | None = None,
        **options: Any,
    ) -> CalibrationResult:
        noise_level = renamed_option(noise_level, alpha, old="alpha", new="noise_level")
        if not (isinstance(noise_level, (int, float)) and noise_level > 0):
            raise WrapgradValueError(
                f"noise_level: expected an input-noise level > 0, got {noise_level!r}"
            )
        return AccuracyDrop()(
            model,
            data,
            perturber="weight",
            target_drop=target_drop,
            fixed_noise_level=float(noise_level),
            **options,
        )


class Halve:
    """σ_NG and α_SG each calibrated to the target drop, both halved (FusionGrad heuristic)."""

    name = "halve"

    def __call__(
        self,
        model: nn.Module,
        data: Any,
        *,
        perturber: str = "weight",
        target_drop: float = 0.05,
        noise_level: float | None = None,
        input_alpha: float | None = None,
        **options: Any,
    ) -> CalibrationResult:
        check_target_drop(target_drop)
        input_alpha = renamed_option(noise_level, input_alpha, old="input_alpha", new="noise_level")
        cal = AccuracyDrop()
        weight = cal(model, data, perturber="weight", target_drop=target_drop, **options)
        parts = [weight]
        if input_alpha is None:
            inp = cal(model, data, perturber="input", target_drop=target_drop, **options)
            parts.append(inp)
            alpha = inp.noise_level
        elif isinstance(input_alpha, (int, float)) and input_alpha > 0:
            alpha = float(input_alpha)
        else:
            raise WrapgradValueError(
                f"noise_level: expected None (calibrate) or a level > 0, got {input_alpha!r}"
            )
        sigma, alpha = weight.sigma / 2.0, alpha / 2.0
        inputs, labels = prepare_data(model, data, options.get("max_samples", 1000))
        seed = int(options.get("seed", 0))
        with evaluation_mode(model):
            ev = NoisyAccuracy(
                model,
                inputs,
                labels,
                draws=options.get("draws", 8),
                seed=seed,
                max_batch=options.get("max_batch"),
            )
            with torch.no_grad():
                correct = ev.correct(sigma=sigma, noise_level=alpha)
            clean = ev.clean()
        acc = float(correct.float().mean())
        drop = float(relative_drop(acc, weight.acc_clean, weight.acc_chance))
        ci = drop_interval(
            correct,
            clean,
            weight.acc_chance,
            confidence=options.get("confidence", 0.95),
            seed=seed,
        )
        return attrs.evolve(
            weight,
            calibrator=self.name,
            perturber="fusion",
            sigma=sigma,
            noise_level=alpha,
            drop=drop,
            drop_ci=ci,
            accuracy=acc,
            converged=all(p.converged for p in parts),
            components=tuple(parts),
        )
