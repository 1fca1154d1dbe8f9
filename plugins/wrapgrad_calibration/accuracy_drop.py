"""The accuracy-drop calibrator: σ such that the relative accuracy drop AD(σ) hits a target.

Bykov et al. (2022), NoiseGrad, Eq. (5) and appendix "NoiseGrad": choose σ_NG such that
AD(σ_NG) ≈ 5%. The accuracy at a level is the mean over ``draws`` noise draws of the accuracy
on the held-out data; the draws are the *same* at every level (ε ~ N(0, 1) drawn once from the
seed, then W ⊙ (1 + σ ε) or x + α (max x − min x) ε), so the measured curve is monotone up to
the model's own wiggles and the bisection is stable. Each level runs through the batched engine
(:func:`wrapgrad.engine.noisy_forward`: the weight samples of a chunk as one ``vmap``-ed call).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from wrapgrad.calibration import (
    CalibrationResult,
    check_target_drop,
    evaluation_mode,
    noisy_correct,
    prepare_data,
)
from wrapgrad.checks import check_positive_int
from wrapgrad.errors import WrapgradValueError, WrapgradWarning
from wrapgrad.progress import progress_bar
from wrapgrad_calibration.bisection import bisect_level
from wrapgrad_calibration.statistics import drop_interval, relative_drop

__all__ = ["AccuracyDrop", "NoisyAccuracy", "renamed_option", "resolve_chance"]

#: Perturber names accepted, mapped to the noise they mean.
PERTURBERS = {
    "weight": "weight",
    "weight_multiplicative": "weight",
    "noisegrad": "weight",
    "input": "input",
    "input_gaussian": "input",
    "smoothgrad": "input",
}


def renamed_option(value: Any, old_value: Any, *, old: str, new: str) -> Any:
    """The value of option ``new``, or of ``old`` (its name before 0.1, deprecated: one name per
    quantity, ``noise_level`` for the input-noise level α_SG as in the enhancers) when given."""
    if old_value is None:
        return value
    warnings.warn(
        f"{old}= is deprecated and will be removed; use {new}= (the input-noise level α_SG has "
        f"one name, noise_level, in enhancers, calibrators and records)",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value


class NoisyAccuracy:
    """Which held-out samples each noise draw classifies correctly, at any noise level.

    The draws come from ``seed`` alone and are reused at every level (common random numbers).

    Args:
        model: the classifier (evaluated, never changed).
        inputs: ``(N, ...)`` held-out inputs.
        labels: ``(N,)`` class indices.
        draws: ``K``, noise draws per level.
        seed: seeds every draw.
        max_batch: rows per forward call of the engine (None: its default).
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        *,
        draws: int = 8,
        seed: int = 0,
        max_batch: int | None = None,
    ) -> None:
        self.model = model
        self.inputs = inputs
        self.labels = labels
        self.draws = check_positive_int(draws, "draws")
        self.seed = int(seed)
        self.max_batch = max_batch
        self.evaluations = 0

    def clean(self) -> Tensor:
        """bool ``(N,)``: the noiseless model's correct predictions."""
        with torch.no_grad():
            return self.model(self.inputs).argmax(dim=1) == self.labels

    def correct(
        self, sigma: float = 0.0, noise_level: float = 0.0, *, alpha: float | None = None
    ) -> Tensor:
        """bool ``(K, N)``: draw ``k`` (weights W ⊙ (1 + σ ε_k), inputs
        x + α (max x − min x) ξ_k, α = ``noise_level``) classifies sample ``n`` correctly
        (:func:`wrapgrad.calibration.noisy_correct`). ``alpha=`` is the name before 0.1
        (deprecated)."""
        noise_level = renamed_option(noise_level, alpha, old="alpha", new="noise_level")
        if sigma == 0.0 and noise_level == 0.0:
            return self.clean().unsqueeze(0).expand(self.draws, -1)
        self.evaluations += 1
        return noisy_correct(
            self.model,
            self.inputs,
            self.labels,
            sigma=sigma,
            noise_level=noise_level,
            draws=self.draws,
            seed=self.seed,
            max_batch=self.max_batch,
        )


def resolve_chance(chance: Any, num_classes: int, measure: Any) -> float:
    """ACC(∞): ``"uniform"`` → 1 / classes; ``"measured"`` → ``measure()``; or a number in [0, 1)."""
    if chance == "uniform":
        return 1.0 / num_classes
    if chance == "measured":
        return float(measure())
    if isinstance(chance, (int, float)) and not isinstance(chance, bool) and 0 <= chance < 1:
        return float(chance)
    raise WrapgradValueError(
        f"chance: expected 'uniform', 'measured' or a number in [0, 1), got {chance!r}"
    )


class AccuracyDrop:
    """Calibrate weight noise σ_NG (the record's ``sigma``) or input noise α_SG (its
    ``noise_level``) to a relative accuracy drop.

    Call as ``AccuracyDrop()(model, data, perturber="weight", target_drop=0.05, **options)``.

    Options:
        draws: noise draws per level (default 8).
        seed: seeds the draws and the bootstrap (default 0).
        max_samples: held-out samples used (default 1000).
        chance: ACC(∞): ``"uniform"`` (1 / classes, the paper's chance level), ``"measured"``
            (the accuracy at level ``chance_level``), or a number.
        chance_level: the level standing in for ∞ when ``chance="measured"`` (default 100).
        tol: stop when ``|AD − target| <= tol`` (default ``target / 10``).
        start: the first level tried (default 0.1).
        max_iter: at most this many levels evaluated (default 20).
        confidence: the drop's interval coverage (default 0.95).
        fixed_noise_level: input-noise level α_SG held fixed while σ is calibrated on the joint
            drop (NoiseGrad++, Eq. 6); only with ``perturber="weight"`` (``fixed_alpha``: its
            name before 0.1, deprecated).
        curve_points: extra evenly spaced levels in ``[0, 2σ]`` evaluated after the search, for
            a fuller accuracy curve (default 0).
        max_batch: rows per forward call (engine default).
        progress: a progress bar (default: ``$WRAPGRAD_PROGRESS``, off; see :mod:`wrapgrad.progress`).
    """

    name = "accuracy_drop"

    def __call__(
        self,
        model: nn.Module,
        data: Any,
        *,
        perturber: str = "weight",
        target_drop: float = 0.05,
        draws: int = 8,
        seed: int = 0,
        max_samples: int | None = 1000,
        chance: Any = "uniform",
        chance_level: float = 100.0,
        tol: float | None = None,
        start: float = 0.1,
        max_iter: int = 20,
        confidence: float = 0.95,
        fixed_noise_level: float = 0.0,
        curve_points: int = 0,
        max_batch: int | None = None,
        progress: bool | None = None,
        fixed_alpha: float | None = None,
    ) -> CalibrationResult:
        target = check_target_drop(target_drop)
        fixed_alpha = renamed_option(
            fixed_noise_level, fixed_alpha, old="fixed_alpha", new="fixed_noise_level"
        )
        if not isinstance(perturber, str) or perturber.lower() not in PERTURBERS:
            raise WrapgradValueError(f"perturber: expected 'weight' or 'input', got {perturber!r}")
        kind = PERTURBERS[perturber.lower()]
        if fixed_alpha and kind != "weight":
            raise WrapgradValueError(
                f"fixed_noise_level: only with perturber='weight' (NoiseGrad++), got "
                f"perturber={perturber!r}"
            )
        if not (isinstance(start, (int, float)) and start > 0):
            raise WrapgradValueError(f"start: expected a level > 0, got {start!r}")
        if not 0.0 < confidence < 1.0:
            raise WrapgradValueError(f"confidence: expected a number in (0, 1), got {confidence!r}")
        tol = target / 10.0 if tol is None else float(tol)
        inputs, labels = prepare_data(model, data, max_samples)
        with evaluation_mode(model):
            ev = NoisyAccuracy(model, inputs, labels, draws=draws, seed=seed, max_batch=max_batch)

            def noisy(level: float) -> Tensor:
                if kind == "weight":
                    return ev.correct(sigma=level, noise_level=fixed_alpha)
                return ev.correct(noise_level=level)

            with torch.no_grad():
                num_classes = int(model(inputs[:1]).shape[1])
            clean = ev.clean()
            acc_clean = float(clean.float().mean())
            acc_chance = resolve_chance(
                chance, num_classes, lambda: float(noisy(chance_level).float().mean())
            )
            if acc_clean - acc_chance < 0.02:
                raise WrapgradValueError(
                    f"model: its accuracy on data is {acc_clean:.4f}, at or below the chance level "
                    f"{acc_chance:.4f}; calibration needs a trained model (AD is undefined)"
                )
            seen: dict[float, Tensor] = {}
            bar = progress_bar(total=max_iter, desc=f"calibrate {kind} noise", progress=progress)

            def drop_at(level: float) -> float:
                if level not in seen:
                    seen[level] = noisy(level)
                    bar.update(1)
                d = float(relative_drop(float(seen[level].float().mean()), acc_clean, acc_chance))
                bar.set_postfix(level=f"{level:.4g}", drop=f"{d:.4f}", refresh=False)
                return d

            try:
                if fixed_alpha:
                    base = drop_at(0.0)  # input noise alone
                    if base >= target:
                        raise WrapgradValueError(
                            f"fixed_noise_level: input noise alone (noise_level={fixed_alpha}) "
                            f"already drops "
                            f"accuracy by {base:.4f} >= target_drop {target}; lower it or raise "
                            f"target_drop"
                        )
                search = bisect_level(
                    drop_at, target, start=float(start), tol=tol, max_iter=max_iter
                )
                if not search.bracketed:
                    raise WrapgradValueError(
                        f"target_drop: the {kind} noise never drops accuracy by {target} (largest "
                        f"level tried {search.points[-1][0]:.4g} gave {search.points[-1][1]:.4f}); "
                        f"the model is insensitive to this noise"
                    )
                level = search.level
                if not search.converged:
                    warnings.warn(
                        f"calibration did not reach |drop - {target}| <= {tol}: the accuracy "
                        f"jumps between levels {search.bracket[0]:.4g} and {search.bracket[1]:.4g} "
                        f"(closest drop {search.value:.4f} at {level:.4g}); more draws or "
                        f"samples smooth the curve",
                        WrapgradWarning,
                        stacklevel=2,
                    )
                for i in range(1, max(0, int(curve_points)) + 1):
                    drop_at(2.0 * level * i / curve_points)
            finally:
                bar.close()
        levels = sorted(seen)
        accs = [float(seen[s].float().mean()) for s in levels]
        if 0.0 not in seen:
            levels = [0.0, *levels]
            accs = [acc_clean, *accs]
        drops = [float(relative_drop(a, acc_clean, acc_chance)) for a in accs]
        ci = drop_interval(seen[level], clean, acc_chance, confidence=confidence, seed=seed)
        return CalibrationResult(
            calibrator="noisegrad++" if fixed_alpha else self.name,
            perturber="fusion" if fixed_alpha else kind,
            sigma=level if kind == "weight" else None,
            noise_level=float(fixed_alpha) if fixed_alpha else (level if kind == "input" else None),
            target_drop=target,
            drop=search.value,
            drop_ci=ci,
            confidence=confidence,
            accuracy=float(seen[level].float().mean()),
            acc_clean=acc_clean,
            acc_chance=acc_chance,
            levels=levels,
            accuracies=accs,
            drops=drops,
            draws=ev.draws,
            num_samples=len(labels),
            evaluations=len(search.points),
            converged=search.converged,
            seed=int(seed),
        )
