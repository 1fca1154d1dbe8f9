"""The ``sweep`` step: a metric of enhanced maps against the relative accuracy drop their noise
level causes (the NoiseGrad paper's Fig. 9), so a reader sees where the 5% rule lands.

For each curve (an enhancer whose level option, ``sigma`` or ``noise_level``, the sweep varies)
and each level ``ℓ`` (``scale`` × the calibrated level, and named fixed levels such as the
paper's α_SG = 0.2), the step

* measures the relative accuracy drop AD(ℓ) (Eq. 5) exactly as the calibration measured it:
  the same held-out items, the same noise draws (the calibration's ``draws`` and ``seed``:
  common random numbers, so AD at scale 1 *is* the calibrated drop), the same ACC(0) and ACC(∞);
* explains the first ``samples`` evaluated items with the enhancer at ``ℓ`` (the explain step's
  method options, absolute value per draw as ``[explain].absolute``; one seed, the pipeline's)
  and scores the maps with a mask metric (default ``localisation_auc`` on the ``square`` mask).

The plain method's score on the same items is the reference line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs
import torch

from wrapgrad.checks import check_positive_int
from wrapgrad.errors import WrapgradValueError
from wrapgrad_pipeline.context import RunContext
from wrapgrad_pipeline.levels import LevelReference
from wrapgrad_pipeline.plan import Plan
from wrapgrad_pipeline.schema import checked, setting
from wrapgrad_pipeline.smoke import SIZES, capped

__all__ = ["SweepCurve", "SweepStep", "SweepTable"]

#: The level options a curve may vary, and the noise each one is.
_LEVEL_OPTIONS = {"sigma": "weight", "noise_level": "input"}


def _positive_numbers(instance: Any, attribute: attrs.Attribute, value: tuple[float, ...]) -> None:
    if not value or any(not v > 0 for v in value):
        raise ValueError(
            f"{attribute.name}: expected a non-empty list of numbers > 0, got {value!r}"
        )


@attrs.frozen(kw_only=True)
class SweepCurve:
    """One curve: an enhancer at several levels of one noise."""

    label: str = setting(doc='the curve\'s name in the figure and the report (`"NG"`)')
    enhancer: str = setting(doc="a registered enhancer (`noisegrad`, `smoothgrad`)")
    option: str = setting(
        doc='the level option varied: `"sigma"` (σ_NG, weight noise) or `"noise_level"` '
        "(α_SG, input noise)"
    )
    level: str = setting(
        doc='the calibrated level, a reference (`"@calibration.ng.sigma"`): its calibration\'s '
        "held-out items and draws measure every drop of the curve"
    )
    scales: tuple[float, ...] = setting(
        (0.25, 0.5, 1.0, 2.0, 4.0),
        doc="the levels, as multiples of `level`",
        validator=_positive_numbers,
    )
    named: Mapping[str, float] = setting(
        factory=dict,
        doc="further fixed levels by name (`{ paper = 0.2 }`: the paper's α_SG), reported as "
        "`sweep.curves.<label>.named.<name>`",
    )
    options: Mapping[str, Any] = setting(
        factory=dict, doc="the enhancer's other options (`n_samples`, ...; checked)"
    )


@attrs.frozen(kw_only=True)
class SweepTable:
    """The noise-level sweep (the NoiseGrad paper's Fig. 9 analogue): a mask metric of the
    enhanced maps against the relative accuracy drop of each level, one curve per
    `[[sweep.curves]]`, drawn as a figure and tabled in the report."""

    method: str = setting("saliency", doc="a registered explainer")
    metric: str = setting(
        "localisation_auc", doc="a registered mask metric (`localisation_auc`, `quantus_...`)"
    )
    mask: str = setting("square", doc="the ground-truth mask the metric compares with")
    samples: int = setting(
        128,
        type="integer ≥ 1",
        doc="the first `samples` evaluated items are explained at every level",
        validator=checked(check_positive_int),
    )
    curves: tuple[SweepCurve, ...] = setting((), doc="see below")


class SweepStep:
    """Runs every curve of ``[sweep]`` on the run's model (one model)."""

    def check(self, table: SweepTable, plan: Plan) -> SweepTable:
        method = plan.component("explainer", table.method, "[sweep].method").name
        spec = plan.component("metric", table.metric, "[sweep].metric")
        if getattr(spec, "requires", None) != "mask":
            raise plan.fail(
                "[sweep].metric",
                f"expected a metric that compares maps with a ground-truth mask, got {spec.name!r}",
            )
        plan.masks.setdefault(table.mask, "[sweep].mask")
        if len(plan.models) != 1:
            raise plan.fail("[sweep]", f"expected a run with one model, got {plan.models}")
        curves = []
        labels = [c.label for c in table.curves]
        if not labels or len(set(labels)) != len(labels):
            raise plan.fail("[sweep].curves", f"expected curves with distinct labels, got {labels}")
        for i, c in enumerate(table.curves):
            where = f"[sweep].curves[{i}]"
            enh = plan.component("enhancer", c.enhancer, f"{where}.enhancer")
            if c.option not in _LEVEL_OPTIONS:
                raise plan.unknown(f"{where}.option", c.option, _LEVEL_OPTIONS, "level option")
            plan.check_options(enh, {**c.options, c.option: 0.0}, f"{where}.options")
            if c.option in c.options:
                raise plan.fail(f"{where}.options.{c.option}", "expected it in `level` instead")
            try:
                ref = LevelReference.parse(c.level)
            except WrapgradValueError as exc:
                raise plan.fail(f"{where}.level", str(exc)) from None
            if ref is None:
                raise plan.fail(
                    f"{where}.level",
                    f"expected a reference such as '@calibration.ng.sigma', got {c.level!r}",
                )
            if ref.calibration not in plan.levels:
                raise plan.unknown(f"{where}.level", ref.calibration, plan.levels, "calibration")
            ref = ref.current(plan.levels[ref.calibration], f"{plan.file}: {where}.level")
            if ref.level != c.option:
                raise plan.fail(
                    f"{where}.level",
                    f"expected a {c.option} reference for option {c.option!r}, got {c.level!r}",
                )
            curves.append(attrs.evolve(c, enhancer=enh.name, level=ref.text()))
        return attrs.evolve(table, method=method, metric=spec.name, curves=tuple(curves))

    def shrink(self, table: SweepTable) -> SweepTable:
        from wrapgrad.registry import get_registry

        reg = get_registry()
        return attrs.evolve(
            table,
            samples=min(table.samples, SIZES["samples"]),
            curves=tuple(
                attrs.evolve(
                    c,
                    scales=c.scales[: SIZES["sweep_levels"]],
                    options=capped(c.options, reg.get("enhancer", c.enhancer).smoke_caps()),
                )
                for c in table.curves
            ),
        )

    def outputs(self, table: SweepTable) -> tuple[str, ...]:
        return ()

    def run(self, table: SweepTable, context: RunContext) -> None:
        from tqdm.auto import tqdm

        from wrapgrad.evaluation import metric as build_metric
        from wrapgrad_pipeline.stats import mean_ci

        ((label, entry),) = context.models.items()
        levels = context.levels.get(label, {})
        data = context.data
        k = min(table.samples, data.inputs.shape[0])
        x, y, mask = data.inputs[:k], data.labels[:k], data.masks[table.mask][:k]
        explain_table = context.tables["explain"]
        metric = build_metric(table.metric)

        def score(explain: Any) -> dict[str, Any]:
            maps = torch.cat(
                [
                    explain(xb, target=yb).detach()
                    for xb, yb in zip(
                        x.split(explain_table.batch_size),
                        y.split(explain_table.batch_size),
                        strict=True,
                    )
                ]
            )
            maps = maps.abs() if explain_table.absolute else maps
            values = torch.as_tensor(metric(maps, mask)).double().reshape(-1).tolist()
            mean, lo, hi, n = mean_ci(values)
            return {"mean": mean, "low": lo, "high": hi, "n": n, "scores": values}

        jobs = [(c, s) for c in table.curves for s in (*c.scales, *c.named)]
        bar = tqdm(total=len(jobs) + 1, desc="sweep", disable=not context.progress, leave=False)
        out: dict[str, Any] = {
            "method": table.method,
            "metric": table.metric,
            "mask": table.mask,
            "samples": k,
            "seed": context.seed,
            "model": label,
            "baseline": score(_wrap(entry.model, table.method, None, {}, context, levels)),
            "curves": {},
        }
        bar.update(1)
        for c in table.curves:
            ref = LevelReference.parse(c.level)
            assert ref is not None  # checked
            calibrated = ref.resolve(levels, f"[sweep] {c.label}.level")
            record = context.results["calibration"][ref.calibration]
            drop = _DropMeter(
                entry.model, data, record, context.tables["calibration"][ref.calibration]
            )
            curve: dict[str, Any] = {
                "enhancer": c.enhancer,
                "option": c.option,
                "calibration": ref.calibration,
                "calibrated": calibrated,
                "target_drop": record.get("target_drop"),
                "points": [],
                "named": {},
            }
            points = [(s * calibrated, s, None) for s in c.scales]
            points += [(float(v), None, name) for name, v in c.named.items()]
            for level, scale, name in points:
                bar.set_postfix_str(f"{c.label} {c.option} {level:.4g}", refresh=False)
                explain = _wrap(
                    entry.model,
                    table.method,
                    c.enhancer,
                    {**c.options, c.option: level},
                    context,
                    levels,
                )
                point = {
                    "level": level,
                    "scale": scale,
                    "drop": drop(c.option, level),
                    **score(explain),
                }
                if name is None:
                    curve["points"].append(point)
                else:
                    curve["named"][name] = point
                bar.update(1)
            out["curves"][c.label] = curve
        bar.close()
        context.results["sweep"] = out
        context.shared["sweep"] = out


class _DropMeter:
    """AD at any level on a calibration's held-out items with its draws (common random numbers),
    relative to its ACC(0) and ACC(∞)."""

    def __init__(self, model: Any, data: Any, record: Mapping[str, Any], table: Any) -> None:
        inputs, labels, _ = data.held_out(table.samples)
        n = int(record.get("num_samples", len(labels)))
        self.model = model
        self.inputs, self.labels = inputs[:n], labels[:n]
        self.draws = int(record.get("draws", 8))
        self.seed = int(record.get("seed") or 0)
        # A smoke run's failed calibration leaves no accuracies: no drops then (NaN).
        self.clean = float(record.get("acc_clean", math.nan))
        self.chance = float(record.get("acc_chance", math.nan))
        self.perturber = record.get("perturber")
        self.known = dict(zip(record.get("levels", ()), record.get("drops", ()), strict=False))

    def __call__(self, option: str, level: float) -> float:
        from wrapgrad.calibration import evaluation_mode, noisy_correct, relative_drop

        if not math.isfinite(self.clean):
            return math.nan
        if self.perturber == _LEVEL_OPTIONS[option] and level in self.known:
            return self.known[level]  # the calibration measured it, with these very draws
        with evaluation_mode(self.model):
            correct = noisy_correct(
                self.model,
                self.inputs,
                self.labels,
                draws=self.draws,
                seed=self.seed,
                **{option: level},
            )
        return float(relative_drop(float(correct.float().mean()), self.clean, self.chance))


def _wrap(
    model: Any,
    method: str,
    enhancer: str | None,
    options: dict[str, Any],
    context: RunContext,
    levels: Mapping[str, Mapping[str, float | None]],
) -> Any:
    """The variant's ``explain`` as the explain step builds it (its method options, |.| per draw
    when ``[explain].absolute``), with the pipeline seed."""
    from wrapgrad_pipeline.steps.explain import option_names, variant_builder

    opts = dict(options)
    if enhancer is not None and "seed" in option_names("enhancer", enhancer):
        opts.setdefault("seed", context.seed)
    explain_table = context.tables["explain"]
    return variant_builder(model, explain_table, method, enhancer, opts, levels)()
