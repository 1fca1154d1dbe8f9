"""The ``explain`` step: every method x every (model, enhancer) variant (``"explanations"``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import torch

from wrapgrad.checks import check_positive_int
from wrapgrad.errors import UnknownNameError, WrapgradValueError
from wrapgrad_pipeline.context import Explanation, RunContext, Variant
from wrapgrad_pipeline.levels import LevelReference, resolve_options
from wrapgrad_pipeline.plan import Plan, variant_label
from wrapgrad_pipeline.schema import checked, setting
from wrapgrad_pipeline.smoke import capped

__all__ = ["EnhancerTable", "ExplainStep", "ExplainTable"]

#: Enhancer names that mean "the plain method".
_NO_ENHANCER = ("none", "baseline")


def _not_empty(instance: Any, attribute: attrs.Attribute, value: tuple[Any, ...]) -> None:
    if not value:
        raise ValueError(f"{attribute.name}: expected at least one entry, got an empty list")


@attrs.frozen(kw_only=True)
class EnhancerTable:
    """`seed` defaults to `[pipeline].seed` for every enhancer that takes one. Method options and
    enhancer options go to their own part (`wrap(method_options=..., enhancer_options=...)`), so
    an option both take (GradientShap's and SmoothGrad's `n_samples`) may be given to each."""

    label: str | None = setting(
        None,
        default_doc='the enhancer\'s name, or `"Baseline"`',
        doc="the column in the report; labels are distinct",
    )
    name: str | None = setting(
        None,
        doc="a registered enhancer (`smoothgrad`, `noisegrad`, `fusiongrad`, `vargrad`); none "
        '(or `"none"`) is the plain method',
    )
    options: Mapping[str, Any] = setting(
        factory=dict,
        doc="the enhancer's options (`n_samples`, `n_models`, `sigma`, `noise_level`, ...; "
        'checked); values may be `"@calibration.<name>.sigma"` / `".alpha"` references',
    )


@attrs.frozen(kw_only=True)
class ExplainTable:
    """Explanation methods and enhancers: every method runs with every enhancer on every model
    of the run; each (model, enhancer) pair is a *variant*, labelled by the enhancer when there
    is one model."""

    methods: tuple[str, ...] = setting(
        doc="registered explainers (`saliency`, `integrated_gradients`, every Captum "
        "attribution by snake-case name)",
        validator=_not_empty,
    )
    enhancers: tuple[EnhancerTable, ...] = setting(
        (EnhancerTable(label="Baseline"),),
        default_doc='`[{label = "Baseline"}]`',
        doc="see below",
        validator=_not_empty,
    )
    method_options: Mapping[str, Mapping[str, Any]] = setting(
        factory=dict,
        doc="`[explain.method_options.<method>]`: the method's options (constructor and "
        "`attribute` options, `layer`, `interpolate`); lists become tuples",
    )
    absolute: bool = setting(
        True,
        doc="evaluate absolute attributions (as the NoiseGrad paper); also the default `abs` "
        "of every metric that takes one (Quantus' included)",
    )
    batch_size: int = setting(
        32,
        type="integer ≥ 1",
        doc="samples per `explain` call (and per Quantus batch)",
        validator=checked(check_positive_int),
    )


class ExplainStep:
    """Explains the evaluated samples with ``wrap(model, method, enhancer, **options)``."""

    def check(self, table: ExplainTable, plan: Plan) -> ExplainTable:
        methods = tuple(
            plan.component("explainer", m, f"[explain].methods[{i}]").name
            for i, m in enumerate(table.methods)
        )
        if len(set(methods)) != len(methods):
            raise plan.fail(
                "[explain].methods", f"expected distinct methods, got {list(table.methods)!r}"
            )
        for method, options in table.method_options.items():
            where = f"[explain].method_options.{method}"
            if method not in methods:
                raise plan.unknown(where, method, methods, "method of [explain].methods")
            if not isinstance(options, Mapping):
                raise plan.fail(where, "expected a table of the method's options")
            _check_references(plan, options, where)
            _check_method_options(plan, method, options, where)
        enhancers = tuple(
            _check_enhancer(plan, e, f"[explain].enhancers[{i}]")
            for i, e in enumerate(table.enhancers)
        )
        labels = [str(e.label) for e in enhancers]
        if len(set(labels)) != len(labels):
            raise plan.fail("[explain].enhancers", f"expected distinct labels, got {labels!r}")
        plan.methods = list(methods)
        plan.enhancers = labels
        plan.variants = [
            variant_label(m, e, len(plan.models), len(labels)) for m in plan.models for e in labels
        ]
        return attrs.evolve(table, methods=methods, enhancers=enhancers)

    def shrink(self, table: ExplainTable) -> ExplainTable:
        from wrapgrad.registry import get_registry

        reg = get_registry()
        method_names = _declared(reg.get("explainer", m) for m in table.methods)
        enhancer_specs = {e.name: reg.get("enhancer", e.name) for e in table.enhancers if e.name}
        enhancer_names = _declared(enhancer_specs.values())
        return attrs.evolve(
            table,
            method_options={
                m: capped(
                    table.method_options.get(m, {}),
                    reg.get("explainer", m).smoke_caps(),
                    shared=enhancer_names,
                )
                for m in table.methods
                if m in table.method_options or reg.get("explainer", m).smoke_caps()
            },
            enhancers=tuple(
                attrs.evolve(
                    e,
                    options=capped(
                        e.options, enhancer_specs[e.name].smoke_caps(), shared=method_names
                    ),
                )
                if e.name
                else e
                for e in table.enhancers
            ),
        )

    def outputs(self, table: ExplainTable) -> tuple[str, ...]:
        return ()

    def run(self, table: ExplainTable, context: RunContext) -> None:
        from tqdm.auto import tqdm

        from wrapgrad.registry import get_registry
        from wrapgrad.wrapping import wrap

        data = context.data
        labels = [str(e.label) for e in table.enhancers]
        variants = {
            variant_label(m, e.label, len(context.models), len(labels)): (m, e)
            for m in context.models
            for e in table.enhancers
        }
        context.variants = {
            v: Variant(label=v, model=m, enhancer=str(e.label)) for v, (m, e) in variants.items()
        }
        settings: dict[str, Any] = {}
        jobs = [(method, v) for method in table.methods for v in variants]
        bar = tqdm(jobs, desc="explain", disable=not context.progress, leave=False)
        for method, v in bar:
            bar.set_postfix_str(f"{method} {v}", refresh=False)
            model_label, enh = variants[v]
            levels = context.levels.get(model_label, {})
            where = f"[explain].enhancers[{labels.index(str(enh.label))}].options"
            method_options = resolve_options(
                table.method_options.get(method, {}), levels, f"[explain].method_options.{method}"
            )
            layer = method_options.pop("layer", None)
            interpolate = method_options.pop("interpolate", False)
            options = resolve_options(enh.options, levels, where)
            settings[v] = {"name": enh.name, "options": dict(options)}
            if enh.name is not None:
                names, _ = get_registry().get("enhancer", enh.name).option_names()
                for key, default in (("seed", context.seed), ("progress", False)):
                    if key in names and key not in options:
                        options[key] = default
            # Each part gets its own options: an option both take (GradientShap's and
            # SmoothGrad's n_samples) goes where the file put it.
            explain = wrap(
                context.models[model_label].model,
                method,
                enh.name,
                layer=layer,
                interpolate=interpolate,
                method_options=method_options,
                enhancer_options=options if enh.name is not None else None,
            )
            raw = torch.cat(
                [
                    explain(xb, target=yb).detach()
                    for xb, yb in zip(
                        data.inputs.split(table.batch_size),
                        data.labels.split(table.batch_size),
                        strict=True,
                    )
                ]
            )
            context.explanations.setdefault(method, {})[v] = Explanation(
                variant=context.variants[v],
                explain=explain,
                raw=raw,
                maps=raw.abs() if table.absolute else raw,
            )
        context.results["methods"] = list(table.methods)
        context.results["enhancers"] = list(variants)
        context.results["variants"] = {
            v: {"model": var.model, "enhancer": var.enhancer} for v, var in context.variants.items()
        }
        context.results["enhancer_settings"] = settings


def _declared(specs: Iterable[Any]) -> set[str]:
    """The option names the specs declare (or their factories' signatures name)."""
    out: set[str] = set()
    for spec in specs:
        out |= spec.option_names()[0]
    return out


def _check_references(plan: Plan, options: Mapping[str, Any], where: str) -> None:
    for key, value in options.items():
        try:
            ref = LevelReference.parse(value)
        except WrapgradValueError as exc:
            raise plan.fail(f"{where}.{key}", str(exc)) from None
        if ref is not None and ref.calibration not in plan.levels:
            raise plan.unknown(
                f"{where}.{key}",
                ref.calibration,
                plan.levels,
                "calibration (a [calibration.<name>] table)",
            )


def _check_method_options(plan: Plan, method: str, options: Mapping[str, Any], where: str) -> None:
    """Build the explainer once with the options that are not references: it refuses names the
    method does not take (nothing runs; building an explainer is cheap)."""
    from wrapgrad.wrapping import build_explainer

    plain = resolve_options(
        {k: v for k, v in options.items() if LevelReference.parse(v) is None}, None, where
    )
    layer, interpolate = plain.pop("layer", None), plain.pop("interpolate", False)
    try:
        build_explainer(method, layer=layer, interpolate=interpolate, options=plain)
    except UnknownNameError as exc:
        raise plan.unknown(
            f"{where}.{exc.name}", exc.name, exc.known, f"option of {method}"
        ) from None


def _check_enhancer(plan: Plan, table: EnhancerTable, where: str) -> EnhancerTable:
    name = table.name
    if name is not None and name.lower() in _NO_ENHANCER:
        name = None
    if name is None:
        if table.options:
            raise plan.fail(
                f"{where}.options", "expected no options for the plain method (no enhancer name)"
            )
        return attrs.evolve(table, name=None, label=table.label or "Baseline")
    spec = plan.component("enhancer", name, f"{where}.name")
    plan.check_options(spec, table.options, f"{where}.options")
    _check_references(plan, table.options, f"{where}.options")
    return attrs.evolve(table, name=spec.name, label=table.label or spec.name)
