"""The ``calibration`` step: noise levels by relative accuracy drop, per model (``"levels"``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from wrapgrad.checks import check_choice, check_positive_int, check_probability
from wrapgrad.errors import WrapgradValueError
from wrapgrad_pipeline.context import RunContext
from wrapgrad_pipeline.levels import provided_levels
from wrapgrad_pipeline.plan import Plan
from wrapgrad_pipeline.schema import checked, setting
from wrapgrad_pipeline.smoke import FALLBACK_LEVELS, SIZES, capped

__all__ = ["PERTURBERS", "CalibrationStep", "CalibrationTable"]

PERTURBERS = ("weight", "input")


@attrs.frozen(kw_only=True)
class CalibrationTable:
    """Any number of named noise-level calibrations (`wrapgrad.calibrate`), run for every model
    on held-out items of the split (never the evaluated ones where the split is big enough).
    Each level has one name, as in the enhancers: `sigma` is σ_NG (weight noise) and
    `noise_level` is α_SG (input noise, relative to each sample's range). Explain options refer
    to them as `"@calibration.<name>.sigma"` (a weight calibration, or a FusionGrad calibrator)
    and `"@calibration.<name>.noise_level"` (an input calibration, or a FusionGrad calibrator),
    optionally scaled by a number: `"@calibration.ng.sigma*0.5"` (FusionGrad's heuristic halves
    both calibrated levels). The forms before 0.1, `".alpha"` and `".sigma"` of an input
    calibration, still mean `".noise_level"` (a `DeprecationWarning` when the file is read)."""

    calibrator: str = setting(
        "accuracy_drop",
        doc="a registered calibrator: `accuracy_drop`, `halve` (FusionGrad: both levels halved, "
        "gives `sigma` and `noise_level`), `noisegrad++` (`sigma`, with `noise_level` fixed)",
    )
    perturber: str = setting(
        "weight",
        doc='`"weight"` (σ_NG, the record\'s `sigma`) or `"input"` (α_SG, its `noise_level`)',
        validator=checked(check_choice, PERTURBERS),
    )
    target_drop: float = setting(
        0.05,
        type="number in (0, 1)",
        doc="the relative accuracy drop AD to reach (NoiseGrad, Eq. 5)",
        validator=checked(check_probability),
    )
    samples: int = setting(
        500,
        type="integer ≥ 1",
        doc="held-out items of the split after the evaluated ones (from the start when the "
        "split is too small)",
        validator=checked(check_positive_int),
    )
    options: Mapping[str, Any] = setting(
        factory=dict,
        doc="the calibrator's options (`draws`, `seed` (default `[pipeline].seed`), `chance`, "
        "`tol`, ...)",
    )


def _key(name: str, model: str, n_models: int) -> str:
    return name if n_models == 1 else f"{model}/{name}"


class CalibrationStep:
    """Runs every ``[calibration.<name>]`` on every model of the run."""

    def check(self, tables: dict[str, CalibrationTable], plan: Plan) -> dict[str, CalibrationTable]:
        out = {}
        for name, table in tables.items():
            where = f"[calibration.{name}]"
            spec = plan.component("calibrator", table.calibrator, f"{where}.calibrator")
            out[name] = attrs.evolve(
                table, calibrator=spec.name, options={"seed": plan.seed, **table.options}
            )
            plan.levels[name] = provided_levels(spec.name, table.perturber)
        return out

    def shrink(self, tables: dict[str, CalibrationTable]) -> dict[str, CalibrationTable]:
        from wrapgrad.registry import get_registry

        return {
            name: attrs.evolve(
                t,
                samples=min(t.samples, SIZES["calibration_samples"]),
                options=capped(
                    t.options, get_registry().get("calibrator", t.calibrator).smoke_caps()
                ),
            )
            for name, t in tables.items()
        }

    def outputs(self, tables: dict[str, CalibrationTable]) -> tuple[str, ...]:
        return ()

    def run(self, tables: dict[str, CalibrationTable], context: RunContext) -> None:
        from wrapgrad.calibration import calibrate, levels_of

        data = context.data
        records: dict[str, Any] = {}
        for label, entry in context.models.items():
            levels = context.levels.setdefault(label, {})
            for name, cal in tables.items():
                key = _key(name, label, len(context.models))
                context.results["seeds"][f"calibration.{key}"] = cal.options.get("seed")
                # Held out from the evaluated samples where the split is big enough.
                inputs, labels, held_out = data.held_out(cal.samples)
                try:
                    record = calibrate(
                        entry.model,
                        (inputs, labels),
                        perturber=cal.perturber,
                        target_drop=cal.target_drop,
                        calibrator=cal.calibrator,
                        **{"progress": context.progress, **cal.options},
                    )
                except WrapgradValueError as exc:
                    if not context.smoke:
                        raise
                    # A smoke run's one-epoch model may be too close to chance to calibrate; the
                    # run goes on with fixed levels and says so in the report.
                    provided = provided_levels(cal.calibrator, cal.perturber)
                    levels[name] = {
                        k: (v if k in provided else None) for k, v in FALLBACK_LEVELS.items()
                    }
                    records[key] = {
                        "calibrator": cal.calibrator,
                        "perturber": cal.perturber,
                        "target_drop": cal.target_drop,
                        **levels[name],
                        "error": f"smoke run: calibration failed ({exc}); fixed levels used",
                    }
                    continue
                found = levels_of(record)
                levels[name] = {"sigma": found["weight"], "noise_level": found["input"]}
                records[key] = (
                    record.to_dict() if hasattr(record, "to_dict") else dict(vars(record))
                )
                records[key].update(levels[name])
                records[key]["held_out"] = held_out
        context.results["calibration"] = records
