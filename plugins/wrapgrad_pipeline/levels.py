"""References to calibrated noise levels in option values: ``"@calibration.<name>.<level>"``.

A calibration record names each level once, as the enhancers do: ``sigma`` is σ_NG (the
multiplicative weight-noise level, NoiseGrad's option ``sigma``) and ``noise_level`` is α_SG
(the input-noise level relative to each sample's range, SmoothGrad's option ``noise_level``).
An option value ``"@calibration.ng.sigma"`` is the σ_NG the ``[calibration.ng]`` table found,
``"@calibration.sg.noise_level"`` the α_SG of an input calibration, optionally scaled:
``"@calibration.ng.sigma*0.5"`` (FusionGrad's "halve both" heuristic).

The forms before 0.1 still work, with a :class:`DeprecationWarning` when the file is read:
``".alpha"`` (the input level of the FusionGrad calibrators) and ``".sigma"`` of an input
calibration (which held α_SG) both mean ``".noise_level"``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import attrs

from wrapgrad.errors import WrapgradValueError

__all__ = ["LEVELS", "LevelReference", "as_option", "provided_levels", "resolve_options"]

_PREFIX = "@calibration."
#: The levels a calibration record holds.
LEVELS = ("sigma", "noise_level")
#: Level names before 0.1 (deprecated) -> the name now.
_RENAMED = {"alpha": "noise_level"}
_FORMAT = (
    "a reference '@calibration.<name>.sigma' (weight noise) or "
    "'@calibration.<name>.noise_level' (input noise), optionally scaled: '...sigma*0.5'"
)


def provided_levels(calibrator: str, perturber: str) -> tuple[str, ...]:
    """The levels a calibration sets: ``accuracy_drop`` the one of its perturber (``sigma`` for
    weight noise, ``noise_level`` for input noise); the FusionGrad calibrators and any other
    both (one it leaves unset is an error when the run resolves it)."""
    if calibrator == "accuracy_drop":
        return ("sigma",) if perturber == "weight" else ("noise_level",)
    return LEVELS


@attrs.frozen
class LevelReference:
    """A parsed ``"@calibration.<calibration>.<level>*<scale>"``."""

    calibration: str
    level: str
    scale: float = 1.0

    @classmethod
    def parse(cls, value: Any) -> LevelReference | None:
        """The reference ``value`` holds; None for a value that is no reference (not a string
        starting with ``"@"``); a :class:`~wrapgrad.errors.WrapgradValueError` for a malformed
        one. ``".alpha"`` is read as given (see :meth:`current`)."""
        if not isinstance(value, str) or not value.startswith("@"):
            return None
        body, star, scale_text = value.removeprefix(_PREFIX).partition("*")
        name, _, level = body.rpartition(".")
        scale = 1.0
        if star:
            try:
                scale = float(scale_text)
            except ValueError:
                scale = math.nan
        if (
            not value.startswith(_PREFIX)
            or not name
            or (level not in LEVELS and level not in _RENAMED)
            or not math.isfinite(scale)
            or not all(c.isalnum() or c in "_+-" for c in name)
        ):
            raise WrapgradValueError(f"expected {_FORMAT}, got {value!r}")
        return cls(name, level, scale)

    def current(self, provides: tuple[str, ...], where: str) -> LevelReference:
        """This reference in today's names, given the levels its calibration ``provides``:
        ``.alpha``, and ``.sigma`` of a calibration that sets only ``noise_level`` (an input
        calibration, whose ``sigma`` held α_SG before 0.1), become ``.noise_level`` with a
        :class:`DeprecationWarning` naming ``where``."""
        level = _RENAMED.get(self.level, self.level)
        if level == "sigma" and provides == ("noise_level",):
            level = "noise_level"
        if level == self.level:
            return self
        new = attrs.evolve(self, level=level)
        warnings.warn(
            f"{where}: {self.text()!r} is deprecated since 0.1; write {new.text()!r} (sigma is "
            f"the weight-noise level, noise_level the input-noise level)",
            DeprecationWarning,
            stacklevel=2,
        )
        return new

    def text(self) -> str:
        """The reference as a file writes it."""
        scale = "" if self.scale == 1.0 else f"*{self.scale:g}"
        return f"{_PREFIX}{self.calibration}.{self.level}{scale}"

    def resolve(self, levels: Mapping[str, Mapping[str, float | None]], where: str) -> float:
        """The calibrated level, scaled; an error naming ``where`` if the calibration found
        none."""
        level = levels[self.calibration].get(_RENAMED.get(self.level, self.level))
        if level is None:
            raise WrapgradValueError(
                f"{where}: '@calibration.{self.calibration}.{self.level}' has no value: the "
                f"calibration found no {self.level} (an input calibration sets noise_level, a "
                f"weight calibration sigma, a FusionGrad calibrator such as 'halve' both)"
            )
        return float(level) * self.scale


def as_option(value: Any) -> Any:
    """A file value as a component option: TOML arrays become tuples (Captum wants tuples for
    shapes such as ``sliding_window_shapes``)."""
    if isinstance(value, (list, tuple)):
        return tuple(as_option(v) for v in value)
    return value


def resolve_options(
    options: Mapping[str, Any],
    levels: Mapping[str, Mapping[str, float | None]] | None,
    where: str,
) -> dict[str, Any]:
    """``options`` as a component takes them: references replaced by the calibrated levels
    (kept as written while ``levels`` is None, i.e. before calibration), lists as tuples."""
    out = {}
    for key, value in options.items():
        ref = LevelReference.parse(value)
        if ref is None:
            out[key] = as_option(value)
        else:
            out[key] = value if levels is None else ref.resolve(levels, f"{where}.{key}")
    return out
