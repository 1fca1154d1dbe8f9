"""The ``explain`` step: every method x every (model, enhancer) variant (``"explanations"``)."""

from __future__ import annotations

import copy
import threading
import time
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import torch

from wrapgrad.captum_adapter import quiet_captum_notices
from wrapgrad.checks import check_positive_int
from wrapgrad.engine.rng import changed_global_rngs, global_rng_states
from wrapgrad.errors import UnknownNameError, WrapgradValueError
from wrapgrad.sharding import Unit, run_sharded
from wrapgrad_pipeline import sharded
from wrapgrad_pipeline.context import Explanation, RunContext, Variant
from wrapgrad_pipeline.levels import LevelReference, resolve_options
from wrapgrad_pipeline.plan import Plan, variant_label
from wrapgrad_pipeline.schema import checked, setting
from wrapgrad_pipeline.smoke import SIZES, capped

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
        'checked); values may be `"@calibration.<name>.sigma"` (σ_NG) / '
        '`"@calibration.<name>.noise_level"` (α_SG) references',
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
        doc="evaluate absolute attributions, as the NoiseGrad paper: the absolute value of each "
        "Monte-Carlo draw's map before the average (the enhancers' `abs_per_sample = true`, the "
        "paper's reference code: mean |E|, not |mean E|) and |E| of the plain method; `false`: "
        "signed maps (a method's own absolute value, Saliency's `abs`, is turned off unless its "
        "options set it). Also the default `abs` of every metric that takes one (Quantus' "
        "included)",
    )
    replicates: int = setting(
        1,
        type="integer ≥ 1",
        doc="enhancer seeds per variant: replicate r runs every enhancer with seed s + r (s its "
        "`seed` option, else `[pipeline].seed`); metrics score every replicate, `scores` holds "
        "the seed-averaged per-sample scores and `scores_by_seed` each seed's, and the report's "
        "intervals and tests count the spread across seeds. A variant without an enhancer is "
        "computed once",
        validator=checked(check_positive_int),
    )
    batch_size: int = setting(
        32,
        type="integer ≥ 1",
        doc="samples per `explain` call (and per Quantus batch)",
        validator=checked(check_positive_int),
    )
    method_samples: Mapping[str, int] = setting(
        factory=dict,
        default_doc="all",
        doc="`{ integrated_gradients = 64 }`: a costly method explains only the first n "
        "evaluated samples, and its metrics score those",
    )


class ExplainStep:
    """Explains the evaluated samples with ``wrap(model, method, enhancer, **options)``, one
    global batch (:mod:`wrapgrad.sharding`) at a time, spread over the ranks of a distributed
    run (:mod:`wrapgrad_pipeline.sharded`)."""

    sharded = True

    def check(self, table: ExplainTable, plan: Plan) -> ExplainTable:
        methods = tuple(
            plan.component("explainer", m, f"[explain].methods[{i}]").name
            for i, m in enumerate(table.methods)
        )
        if len(set(methods)) != len(methods):
            raise plan.fail(
                "[explain].methods", f"expected distinct methods, got {list(table.methods)!r}"
            )
        method_options: dict[str, Mapping[str, Any]] = {}
        for method, options in table.method_options.items():
            where = f"[explain].method_options.{method}"
            if method not in methods:
                raise plan.unknown(where, method, methods, "method of [explain].methods")
            if not isinstance(options, Mapping):
                raise plan.fail(where, "expected a table of the method's options")
            options = _check_references(plan, options, where)
            _check_method_options(plan, method, options, where)
            method_options[method] = options
        for method, n in table.method_samples.items():
            where = f"[explain].method_samples.{method}"
            if method not in methods:
                raise plan.unknown(where, method, methods, "method of [explain].methods")
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise plan.fail(where, f"expected an integer ≥ 1, got {n!r}")
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
        return attrs.evolve(
            table, methods=methods, enhancers=enhancers, method_options=method_options
        )

    def shrink(self, table: ExplainTable) -> ExplainTable:
        from wrapgrad.registry import get_registry

        reg = get_registry()
        method_names = _declared(reg.get("explainer", m) for m in table.methods)
        enhancer_specs = {e.name: reg.get("enhancer", e.name) for e in table.enhancers if e.name}
        enhancer_names = _declared(enhancer_specs.values())
        return attrs.evolve(
            table,
            replicates=min(table.replicates, SIZES["replicates"]),
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
        timings: dict[str, float] = {}
        jobs: dict[tuple[str, str], tuple[int, list[int | None], Builder, Any, bool]] = {}
        for method in table.methods:
            for v in variants:
                n = min(
                    table.method_samples.get(method, data.inputs.shape[0]), data.inputs.shape[0]
                )
                model_label, enh = variants[v]
                levels = context.levels.get(model_label, {})
                where = f"[explain].enhancers[{labels.index(str(enh.label))}].options"
                options = resolve_options(enh.options, levels, where)
                seeds: list[int | None] = [None]
                if enh.name is not None and "seed" in option_names("enhancer", enh.name):
                    base = int(options.pop("seed", context.seed))
                    seeds = [base + r for r in range(table.replicates)]
                build = variant_builder(
                    context.models[model_label].model, table, method, enh.name, options, levels
                )
                settings[v] = {"name": enh.name, "options": dict(build.options), "seeds": seeds}
                plain = build() if seeds == [None] else None
                jobs[method, v] = (n, seeds, build, plain, enh.name is not None)
        units = sharded.units(context, int(data.inputs.shape[0]))
        bar = tqdm(total=len(units), desc="explain", disable=not context.progress, leave=False)
        # An enhancer without a seed option draws its seed from the global generator per call.
        unseeded = any(enh and seeds == [None] for _, seeds, _, _, enh in jobs.values())
        workers = explain_workers(context, table.methods, unseeded_enhancer=unseeded)
        own = ThreadJobs(jobs) if workers > 1 else None
        lock = threading.Lock()
        computed: list[int] = []

        def work(unit: Unit) -> dict[str, list[torch.Tensor]]:
            """The maps of one global batch: every method, variant and enhancer seed, each
            seed's noise drawn from the batch's own seed (``unit.seed(seed)``); the global
            generator, for components that draw from it, seeded from the batch too (with
            several workers nothing draws from it: see :func:`explain_workers`)."""
            if own is None:
                torch.manual_seed(unit.seed(context.seed, "explain"))
            with lock:
                computed.append(unit.index)
            out: dict[str, list[torch.Tensor]] = {}
            for (method, v), (n, seeds, build, plain, _) in (own.get() if own else jobs).items():
                started = time.perf_counter()
                part = unit.take(n)
                xb = data.inputs[unit.start : unit.start + part.stop]
                yb = data.labels[unit.start : unit.start + part.stop]
                out[f"{method}|{v}"] = [
                    (plain if seed is None else build(seed=unit.seed(seed)))(xb, target=yb).detach()
                    for seed in seeds
                    if part.stop
                ]
                with lock:
                    timings[method] = timings.get(method, 0.0) + time.perf_counter() - started
            with lock:
                bar.update(1)
            return out

        step_started = time.perf_counter()
        rng_before = global_rng_states() if workers > 1 else None
        with warnings.catch_warnings():
            if workers > 1:  # the workers share one filter list: set Captum's notices once
                quiet_captum_notices()
            parts = run_sharded(
                units,
                work,
                what="explain",
                store=sharded.shard_store(context, "explain"),
                workers=workers,
            )
        bar.close()
        if rng_before is not None and changed_global_rngs(rng_before):
            raise WrapgradValueError(
                f"workers: something drew from the global random number generators while "
                f"{workers} workers explained (a method or model that draws without its traits "
                f"saying stochastic, e.g. dropout called with training=True in eval mode), so "
                f"the maps depend on the threads' timing; run with one worker (--workers 1)"
            )
        busy = sum(timings.values())
        if workers > 1 and busy > 0:  # each method's share of the step's wall time, not the
            # sum of its jobs' times on overlapping workers (which would exceed the step's)
            share = (time.perf_counter() - step_started) / busy
            timings = {k: t * share for k, t in timings.items()}
        if own is not None and computed:  # the global generator as one worker leaves it
            torch.manual_seed(units[max(computed)].seed(context.seed, "explain"))
        for (method, v), (_n, seeds, build, plain, enhanced) in jobs.items():
            runs = []
            for r, seed in enumerate(seeds):
                raw = torch.cat([p[f"{method}|{v}"][r] for p in parts if p[f"{method}|{v}"]])
                runs.append(
                    Explanation(
                        variant=context.variants[v],
                        explain=plain if seed is None else build(seed=seed),
                        raw=raw,
                        maps=raw.abs() if table.absolute else raw,
                        seed=seed,
                        rebuild=build if enhanced else None,
                    )
                )
            runs[0].replicates = runs[1:]
            context.explanations.setdefault(method, {})[v] = runs[0]
        timings = {k: round(t, 3) for k, t in timings.items()}
        context.results["methods"] = list(table.methods)
        context.results["enhancers"] = list(variants)
        context.results["variants"] = {
            v: {"model": var.model, "enhancer": var.enhancer} for v, var in context.variants.items()
        }
        context.results["enhancer_settings"] = settings
        context.results["replicates"] = table.replicates
        context.results["explain_timings_s"] = timings
        context.results["method_samples"] = {
            m: min(table.method_samples.get(m, data.inputs.shape[0]), data.inputs.shape[0])
            for m in table.methods
        }
        context.results["absolute"] = table.absolute
        context.results["method_options"] = {
            m: dict(table.method_options.get(m, {})) for m in table.methods
        }


def explain_workers(
    context: RunContext, methods: Iterable[str], *, unseeded_enhancer: bool = False
) -> int:
    """How many threads explain the global batches: ``context.workers``, or 1 where something
    draws from the global RNGs, whose draws would interleave across threads: a method whose
    traits say ``stochastic`` (GradientShap, Lime, ...), a model in training mode (dropout),
    or an enhancer without a ``seed`` option (``unseeded_enhancer``: its seed comes from the
    global generator at every call). A model in eval mode that draws anyway (a functional
    ``dropout(training=True)``) cannot be told from its traits: the step then fails after the
    workers, naming ``workers``, because the global states moved
    (:func:`~wrapgrad.engine.rng.changed_global_rngs`)."""
    from wrapgrad.engine.views import in_training
    from wrapgrad.registry import get_registry

    if context.workers == 1 or unseeded_enhancer:
        return 1
    reg = get_registry()
    if any(reg.get("explainer", m).traits.stochastic for m in methods):
        return 1
    if any(in_training(entry.model) for entry in context.models.values()):
        return 1
    return context.workers


class ThreadJobs:
    """The explain step's jobs for the calling worker thread: built once per thread on a deep
    copy of each model, so that no two threads evaluate one module with other weights at once
    (``torch.func.functional_call`` swaps a module's tensors while it runs)."""

    def __init__(
        self, jobs: dict[tuple[str, str], tuple[int, list[int | None], Builder, Any, bool]]
    ):
        self.jobs = jobs
        self.local = threading.local()

    def get(self) -> dict[tuple[str, str], tuple[int, list[int | None], Builder, Any, bool]]:
        mine = getattr(self.local, "jobs", None)
        if mine is None:
            copies: dict[int, Any] = {}
            mine = {}
            for key, (n, seeds, build, plain, enhanced) in self.jobs.items():
                if id(build.model) not in copies:
                    copies[id(build.model)] = _worker_copy(build.model)
                own = attrs.evolve(build, model=copies[id(build.model)])
                mine[key] = (n, seeds, own, None if plain is None else own(), enhanced)
            self.local.jobs = mine
        return mine


def _worker_copy(model: Any) -> Any:
    """A deep copy of ``model`` for one worker thread (an error naming ``workers`` if the model
    cannot be copied)."""
    try:
        return copy.deepcopy(model)
    except Exception as exc:
        raise WrapgradValueError(
            f"workers: each worker explains with its own copy of the model, but "
            f"{type(model).__name__} cannot be deep-copied ({type(exc).__name__}: {exc}); run "
            f"with one worker (--workers 1)"
        ) from exc


def option_names(kind: str, name: str) -> set[str]:
    """The option names the registered component declares (or its factory's signature)."""
    from wrapgrad.registry import get_registry

    return set(get_registry().get(kind, name).option_names()[0])


def method_parts(
    table: ExplainTable, method: str, levels: Mapping[str, Mapping[str, float | None]]
) -> tuple[dict[str, Any], Any, Any]:
    """``(method_options, layer, interpolate)`` of ``method`` as the explain step runs it:
    references resolved, and the method's own absolute value (Saliency's ``abs``, Captum's
    default True) off unless the file sets it, since ``[explain].absolute`` decides (and an
    enhancer's average would otherwise come after the absolute value only by accident)."""
    options = resolve_options(
        table.method_options.get(method, {}), levels, f"[explain].method_options.{method}"
    )
    layer = options.pop("layer", None)
    interpolate = options.pop("interpolate", False)
    if "abs" in option_names("explainer", method):
        options.setdefault("abs", False)
    return options, layer, interpolate


def enhancer_defaults(
    enhancer: str | None, options: Mapping[str, Any], *, absolute: bool
) -> dict[str, Any]:
    """An enhancer's options with the pipeline's defaults for those it takes: no progress bar,
    and with ``absolute`` the absolute value of every draw before the average
    (``abs_per_sample``, the NoiseGrad reference code's mean of ``abs(E)``)."""
    out = dict(options)
    if enhancer is None:
        return out
    names = option_names("enhancer", enhancer)
    if "progress" in names:
        out.setdefault("progress", False)
    if absolute and "abs_per_sample" in names:
        out.setdefault("abs_per_sample", True)
    return out


def variant_builder(
    model: Any,
    table: ExplainTable,
    method: str,
    enhancer: str | None,
    options: Mapping[str, Any],
    levels: Mapping[str, Mapping[str, float | None]],
) -> Builder:
    """The :class:`Builder` of a variant as the explain step runs it: the method's options
    (:func:`method_parts`) and the enhancer's with the pipeline's defaults
    (:func:`enhancer_defaults`)."""
    method_options, layer, interpolate = method_parts(table, method, levels)
    return Builder(
        model=model,
        method=method,
        enhancer=enhancer,
        layer=layer,
        interpolate=interpolate,
        method_options=method_options,
        options=enhancer_defaults(enhancer, options, absolute=table.absolute),
    )


@attrs.frozen(kw_only=True)
class Builder:
    """``build(**overrides)``: ``wrap`` of a variant with the enhancer options ``overrides``
    replaced (the seed of a replicate, a generator for fresh noise). Each part gets its own
    options, so an option both take (GradientShap's and SmoothGrad's ``n_samples``) goes where
    the file put it."""

    model: Any
    method: str
    enhancer: str | None
    layer: Any = None
    interpolate: Any = False
    method_options: Mapping[str, Any] = attrs.field(factory=dict)
    options: Mapping[str, Any] = attrs.field(factory=dict)
    """The enhancer options (with the pipeline's defaults)."""

    def __call__(self, **overrides: Any) -> Any:
        from wrapgrad.wrapping import wrap

        return wrap(
            self.model,
            self.method,
            self.enhancer,
            layer=self.layer,
            interpolate=self.interpolate,
            method_options=dict(self.method_options),
            enhancer_options=({**self.options, **overrides} if self.enhancer is not None else None),
        )


def _declared(specs: Iterable[Any]) -> set[str]:
    """The option names the specs declare (or their factories' signatures name)."""
    out: set[str] = set()
    for spec in specs:
        out |= spec.option_names()[0]
    return out


def _check_references(plan: Plan, options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``options`` with every level reference checked against the calibrations and written in
    today's names (``.alpha`` and ``.sigma`` of an input calibration: ``.noise_level``, with a
    DeprecationWarning)."""
    out = dict(options)
    for key, value in options.items():
        try:
            ref = LevelReference.parse(value)
        except WrapgradValueError as exc:
            raise plan.fail(f"{where}.{key}", str(exc)) from None
        if ref is None:
            continue
        if ref.calibration not in plan.levels:
            raise plan.unknown(
                f"{where}.{key}",
                ref.calibration,
                plan.levels,
                "calibration (a [calibration.<name>] table)",
            )
        current = ref.current(plan.levels[ref.calibration], f"{plan.file}: {where}.{key}")
        if current.level not in plan.levels[ref.calibration]:
            raise plan.fail(
                f"{where}.{key}",
                f"expected a level the calibration {ref.calibration!r} sets "
                f"({' or '.join(plan.levels[ref.calibration])}), got {ref.text()!r}",
            )
        out[key] = value if current is ref else current.text()
    return out


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
    options = _check_references(plan, table.options, f"{where}.options")
    return attrs.evolve(table, name=spec.name, label=table.label or spec.name, options=options)
