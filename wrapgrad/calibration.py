"""``wrapgrad.calibrate``: pick a noise level from the relative accuracy drop it causes.

Bykov et al. (2022), NoiseGrad, Eq. (5): the relative accuracy drop at noise level σ is

.. math:: AD(\\sigma) = 1 - \\frac{ACC(\\sigma) - ACC(\\infty)}{ACC(0) - ACC(\\infty)}

with ACC(0) the clean accuracy and ACC(∞) the chance level; the paper sets σ_NG so that
AD(σ_NG) ≈ 5%. The calibrators themselves are plugins (``wrapgrad_calibrators`` hook; built-ins
``accuracy_drop``, ``halve``, ``noisegrad++`` in ``wrapgrad_calibration``); this module holds the
front-end, the result record and the checks of the user's data.

One name per quantity: a record's ``sigma`` is always σ_NG, the multiplicative weight-noise level,
and its ``noise_level`` always α_SG, the input-noise level relative to each sample's range (the
enhancers' option names); ``level`` is the one the calibration chose, whichever it is.

Example::

    result = wrapgrad.calibrate(model, (x_val, y_val), perturber="weight", target_drop=0.05)
    explain = wrapgrad.wrap(model, "saliency", enhancer="noisegrad", sigma=result.sigma)
    sg = wrapgrad.calibrate(model, (x_val, y_val), perturber="input")
    explain = wrapgrad.wrap(model, "saliency", enhancer="smoothgrad", noise_level=sg.noise_level)
"""

from __future__ import annotations

import contextlib
import numbers
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from wrapgrad.checks import check_finite, describe
from wrapgrad.errors import WrapgradTypeError, WrapgradValueError
from wrapgrad.functional import model_device
from wrapgrad.guard import ModelGuard

__all__ = [
    "CalibrationResult",
    "calibrate",
    "check_target_drop",
    "evaluation_mode",
    "levels_of",
    "noisy_correct",
    "prepare_data",
    "relative_drop",
]


def _floats(value: Iterable[Any]) -> tuple[float, ...]:
    return tuple(float(v) for v in value)


def _level(value: Any) -> float | None:
    return None if value is None else float(value)


@attrs.frozen(kw_only=True)
class CalibrationResult:
    """What a calibration found. ``str(result)`` is a readable summary.

    One name per quantity, as the enhancers' options: ``sigma`` is σ_NG of the multiplicative
    weight noise W ⊙ η, η ~ N(1, σ²) (``perturber="weight"`` and the FusionGrad heuristics), and
    ``noise_level`` is α_SG, the input-noise level relative to each sample's range
    (σ_SG = α_SG (max x − min x), the paper's Eq. 4; ``perturber="input"`` and the FusionGrad
    heuristics). A level the calibration does not set is None; :attr:`level` is the one it chose.
    """

    calibrator: str
    """The calibrator's registered name."""
    perturber: str
    """``"weight"``, ``"input"`` or ``"fusion"`` (both noises)."""
    sigma: float | None = attrs.field(default=None, converter=_level)
    """σ_NG, the weight-noise level (None for an input calibration)."""
    noise_level: float | None = attrs.field(default=None, converter=_level)
    """α_SG, the input-noise level (None for a weight calibration)."""
    target_drop: float
    """The relative accuracy drop asked for."""
    drop: float
    """The relative accuracy drop measured at the calibrated level(s)."""
    drop_ci: tuple[float, float] = attrs.field(converter=_floats)
    """Bootstrap confidence interval of ``drop`` (over noise draws and samples)."""
    confidence: float = 0.95
    accuracy: float
    """ACC at the calibrated level (mean over draws)."""
    acc_clean: float
    """ACC(0): the clean accuracy on the calibration data."""
    acc_chance: float
    """ACC(∞): chance level (1 / number of classes) or measured."""
    levels: tuple[float, ...] = attrs.field(converter=_floats)
    """Noise levels evaluated (sorted): the accuracy-vs-level curve's x values."""
    accuracies: tuple[float, ...] = attrs.field(converter=_floats)
    """ACC at each of ``levels``."""
    drops: tuple[float, ...] = attrs.field(converter=_floats)
    """AD at each of ``levels``."""
    draws: int
    """Noise draws per level (weight samples, or noisy copies per input)."""
    num_samples: int
    """Held-out samples used."""
    evaluations: int
    """Noise levels evaluated by the search."""
    converged: bool = True
    """False when the search stopped without reaching the tolerance (a steep curve)."""
    seed: int | None = None
    components: tuple[CalibrationResult, ...] = ()
    """Sub-calibrations (the ``halve`` heuristic holds the weight and the input one)."""

    def __attrs_post_init__(self) -> None:
        if self.sigma is None and self.noise_level is None:
            raise WrapgradValueError(
                "sigma: expected a weight-noise level sigma or an input-noise level noise_level "
                "(or both), got neither"
            )

    @property
    def level(self) -> float:
        """The level this calibration chose: ``noise_level`` for an input calibration, else
        ``sigma`` (the curve ``levels`` are of this quantity)."""
        if self.perturber == "input":
            return float(self.noise_level)  # type: ignore[arg-type]
        return float(self.sigma if self.sigma is not None else self.noise_level)  # type: ignore[arg-type]

    @property
    def alpha(self) -> float | None:
        """Deprecated at 0.1: the input-noise level is ``noise_level`` (the enhancers' name)."""
        warnings.warn(
            "CalibrationResult.alpha is deprecated and will be removed; use .noise_level (the "
            "input-noise level α_SG, as the enhancers' option noise_level)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.noise_level

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (components included)."""
        out = attrs.asdict(self, recurse=False)
        out["components"] = [c.to_dict() for c in self.components]
        out["drop_ci"] = list(self.drop_ci)
        for k in ("levels", "accuracies", "drops"):
            out[k] = list(out[k])
        return out

    def __str__(self) -> str:
        levels = [
            f"  {name:<11} {value:.6g}"
            for name, value in (("sigma", self.sigma), ("noise_level", self.noise_level))
            if value is not None
        ]
        lines = [
            f"{self.calibrator} calibration ({self.perturber} noise)",
            *levels,
            f"  drop        {self.drop:.4f}  (target {self.target_drop:.4f}, "
            f"{100 * self.confidence:.0f}% CI [{self.drop_ci[0]:.4f}, {self.drop_ci[1]:.4f}])",
            f"  accuracy    {self.accuracy:.4f}  (clean {self.acc_clean:.4f}, chance "
            f"{self.acc_chance:.4f})",
            f"  draws       {self.draws} per level, {self.num_samples} samples, "
            f"{self.evaluations} levels evaluated"
            + ("" if self.converged else "  [NOT converged]"),
        ]
        return "\n".join(lines)


def levels_of(record: Any) -> dict[str, float | None]:
    """``{"weight": σ_NG, "input": α_SG}`` of a calibration record (None where it set none).

    Reads :class:`CalibrationResult`'s ``sigma`` and ``noise_level``; a third-party record in
    the form before 0.1 (``alpha`` for the input level beside a weight ``sigma``, or ``sigma``
    holding α_SG for ``perturber="input"``) is read too, with a :class:`DeprecationWarning`."""
    if isinstance(record, CalibrationResult):
        return {"weight": record.sigma, "input": record.noise_level}
    sigma = getattr(record, "sigma", None)
    noise = getattr(record, "noise_level", None)
    if noise is None and (
        getattr(record, "alpha", None) is not None or getattr(record, "perturber", None) == "input"
    ):
        warnings.warn(
            f"{type(record).__name__}: a calibration record names the input-noise level "
            f"noise_level (not alpha, nor sigma for perturber='input') since 0.1",
            DeprecationWarning,
            stacklevel=2,
        )
        if getattr(record, "perturber", None) == "input":
            return {"weight": None, "input": _level(sigma)}
        noise = record.alpha
    return {"weight": _level(sigma), "input": _level(noise)}


def relative_drop(
    acc: float | Tensor, acc_clean: float | Tensor, acc_chance: float
) -> float | Tensor:
    """AD = 1 − (ACC(σ) − ACC(∞)) / (ACC(0) − ACC(∞)) (Bykov et al. 2022, Eq. 5; Eq. 6 for the
    joint FusionGrad drop AD₊₊ with ACC₊₊)."""
    return 1.0 - (acc - acc_chance) / (acc_clean - acc_chance)


def noisy_correct(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    *,
    sigma: float = 0.0,
    noise_level: float = 0.0,
    draws: int = 8,
    seed: int = 0,
    max_batch: int | None = None,
) -> Tensor:
    """bool ``(K, N)``: noise draw ``k`` classifies sample ``n`` correctly.

    Draw ``k`` perturbs the weights as W ⊙ (1 + σ ε_k) and the inputs as x + α (max x − min x) ξ_k
    (the registered ``weight_multiplicative`` and ``input_gaussian`` perturbers, through the
    batched engine), every draw from ``seed`` alone: the same seed gives the same ε_k and ξ_k at
    every level (common random numbers), so accuracy curves are smooth in the level. With no
    noise the ``K`` rows are the clean predictions. The model is evaluated as it is (use
    :func:`evaluation_mode`) and never changed.
    """
    from wrapgrad.engine import noisy_forward
    from wrapgrad.registry import get_registry

    if sigma == 0.0 and noise_level == 0.0:
        with torch.no_grad():
            clean = torch.cat([model(xb).argmax(dim=1) for xb in inputs.split(512)]) == labels
        return clean.unsqueeze(0).expand(int(draws), -1)
    reg = get_registry()
    weight = reg.get("perturber", "weight_multiplicative").factory
    noise = reg.get("perturber", "input_gaussian").factory
    logits = noisy_forward(
        model,
        inputs,
        weight_sampler=weight(sigma=sigma) if sigma > 0 else None,
        input_sampler=noise(noise_level=noise_level) if noise_level > 0 else None,
        n_models=int(draws),
        n_inputs=1,
        seed=int(seed),
        max_batch=max_batch,
    )  # (K, 1, N, C)
    return logits[:, 0].argmax(dim=-1) == labels


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluate ``model`` as deployed (every module's ``training`` flag off: BatchNorm running
    statistics, no dropout) inside a :class:`~wrapgrad.functional.ModelGuard` that puts the flags,
    and anything else a call changed, back on exit."""
    with ModelGuard(model, warn=False):
        for m in model.modules():
            m.training = False
        yield model


def check_target_drop(target_drop: Any) -> float:
    """``target_drop`` as a float in (0, 1), or a clear error."""
    if isinstance(target_drop, bool) or not isinstance(target_drop, numbers.Real):
        raise WrapgradTypeError(
            f"target_drop: expected a number in (0, 1), got {describe(target_drop)}"
        )
    if not 0.0 < float(target_drop) < 1.0:
        raise WrapgradValueError(
            f"target_drop: expected a relative accuracy drop in (0, 1) (e.g. 0.05 for 5%), "
            f"got {target_drop!r}"
        )
    return float(target_drop)


def prepare_data(
    model: nn.Module, data: Any, max_samples: int | None = None
) -> tuple[Tensor, Tensor]:
    """The calibration data as ``(inputs, labels)`` tensors, checked.

    ``data`` is a ``(inputs, labels)`` pair of tensors, a ``DataLoader`` (or any iterable of
    ``(inputs, labels, ...)`` batches), or an object with ``.tensors()`` (wrapgrad's data sets).
    At most ``max_samples`` samples are kept. Raises if the data is empty, not on the model's
    device, not finite, or has labels outside ``[0, number of classes)``.
    """
    if not isinstance(model, nn.Module):
        raise WrapgradTypeError(f"model: expected a torch.nn.Module, got {describe(model)}")
    if hasattr(data, "tensors") and callable(data.tensors):
        data = data.tensors()
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, Tensor) for t in data)
    ):
        inputs, labels = data
    elif isinstance(data, (Tensor, str, bytes)) or not isinstance(data, Iterable):
        raise WrapgradTypeError(
            f"data: expected an (inputs, labels) pair of tensors or a DataLoader of "
            f"(inputs, labels) batches, got {describe(data)}"
        )
    else:
        xs: list[Tensor] = []
        ys: list[Tensor] = []
        count = 0
        for i, batch in enumerate(data):
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                raise WrapgradTypeError(
                    f"data: expected batches of (inputs, labels), batch {i} is {describe(batch)}"
                )
            xs.append(torch.as_tensor(batch[0]))
            ys.append(torch.as_tensor(batch[1]))
            count += len(ys[-1])
            if max_samples is not None and count >= max_samples:
                break
        if not xs:
            raise WrapgradValueError("data: expected at least one sample, got an empty DataLoader")
        inputs, labels = torch.cat(xs), torch.cat(ys)
    if inputs.dim() == 0 or inputs.shape[0] == 0 or labels.numel() == 0:
        raise WrapgradValueError(
            f"data: expected at least one sample, got inputs {describe(inputs)}"
        )
    if labels.dim() != 1 or labels.shape[0] != inputs.shape[0]:
        raise WrapgradValueError(
            f"data: expected labels of shape ({inputs.shape[0]},) (one class index per input), "
            f"got {describe(labels)}"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise WrapgradTypeError(
            f"data: expected integer class labels, got labels of dtype {labels.dtype}"
        )
    if not inputs.is_floating_point():
        raise WrapgradTypeError(f"data: expected floating-point inputs, got dtype {inputs.dtype}")
    if max_samples is not None:
        inputs, labels = inputs[:max_samples], labels[:max_samples]
    device = model_device(model)
    for what, t in (("inputs", inputs), ("labels", labels)):
        if device is not None and t.device != device:
            raise WrapgradValueError(
                f"data: expected {what} on the model's device {device}, got them on {t.device}; "
                f"move them with .to({str(device)!r})"
            )
    check_finite(inputs, "data (inputs)")
    with evaluation_mode(model), torch.no_grad():
        out = model(inputs[:1])
    if not isinstance(out, Tensor) or out.dim() != 2:
        raise WrapgradValueError(
            f"model: expected class scores of shape (batch, classes), got {describe(out)}"
        )
    n_classes = int(out.shape[1])
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= n_classes:
        raise WrapgradValueError(
            f"data: expected labels in [0, {n_classes}) (the model has {n_classes} classes), "
            f"got labels in [{lo}, {hi}]"
        )
    return inputs.detach(), labels.detach().long()


def calibrate(
    model: nn.Module,
    data: Any,
    perturber: str = "weight",
    target_drop: float = 0.05,
    *,
    calibrator: str = "accuracy_drop",
    registry: Any = None,
    **options: Any,
) -> CalibrationResult:
    """Find the noise level whose relative accuracy drop AD is ``target_drop`` (Bykov et al. 2022,
    Eq. 5); the model is never changed.

    Args:
        model: a classifier returning class scores ``(batch, classes)``.
        data: held-out ``(inputs, labels)`` tensors or a DataLoader of such batches.
        perturber: ``"weight"`` (multiplicative weight noise, NoiseGrad's σ_NG) or ``"input"``
            (Gaussian input noise, SmoothGrad's α_SG); ignored by the FusionGrad heuristics.
        target_drop: the relative accuracy drop to reach, in (0, 1) (paper: 0.05).
        calibrator: a registered calibrator: ``"accuracy_drop"`` (default), ``"halve"``
            (FusionGrad: both calibrated levels halved) or ``"noisegrad++"`` (α_SG = 0.1 fixed,
            σ_NG calibrated on the joint drop, Eq. 6).
        registry: the plugin registry to resolve the calibrator (and everything it looks up) in;
            default: the current one (:func:`wrapgrad.registry.use_registry`).
        **options: the calibrator's options, e.g. ``draws`` (noise draws per level, default 8),
            ``seed``, ``max_samples`` (default 1000), ``chance`` (``"uniform"``, ``"measured"``
            or a number), ``tol``, ``progress``. See ``wrapgrad_calibration.AccuracyDrop``.

    Returns:
        A :class:`CalibrationResult` (``.sigma`` for weight noise, ``.noise_level`` for input
        noise, ``.level``, ``.drop``, ``.drop_ci``, the curve, ...).
    """
    from wrapgrad.registry import get_registry, use_registry

    with use_registry(registry):
        spec = get_registry().get("calibrator", calibrator, argument="calibrator")
        return spec.factory()(model, data, perturber=perturber, target_drop=target_drop, **options)
