"""References to calibrated noise levels in option values: ``"@calibration.<name>.sigma"``.

An option value ``"@calibration.ng.sigma"`` is the level the ``[calibration.ng]`` table found
(``.alpha``: the input level of the FusionGrad calibrators), optionally scaled:
``"@calibration.ng.sigma*0.5"`` (FusionGrad's "halve both" heuristic).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from wrapgrad.errors import WrapgradValueError

__all__ = ["LEVELS", "LevelReference", "as_option", "resolve_options"]

_PREFIX = "@calibration."
#: The levels a calibration record holds.
LEVELS = ("sigma", "alpha")
_FORMAT = (
    "a reference '@calibration.<name>.sigma' or '@calibration.<name>.alpha' "
    "(optionally scaled: '...sigma*0.5')"
)


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
        one."""
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
            or level not in LEVELS
            or not math.isfinite(scale)
            or not all(c.isalnum() or c in "_+-" for c in name)
        ):
            raise WrapgradValueError(f"expected {_FORMAT}, got {value!r}")
        return cls(name, level, scale)

    def resolve(self, levels: Mapping[str, Mapping[str, float | None]], where: str) -> float:
        """The calibrated level, scaled; an error naming ``where`` if the calibration found
        none."""
        level = levels[self.calibration][self.level]
        if level is None:
            raise WrapgradValueError(
                f"{where}: '@calibration.{self.calibration}.{self.level}' has no value: the "
                f"calibration found no {self.level} (use a FusionGrad calibrator such as 'halve')"
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
