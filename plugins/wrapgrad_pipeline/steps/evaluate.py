"""The ``evaluate`` step: metrics and attacks on every method x variant (``"scores"``).

Every metric and attack is a registered component (``wrapgrad.metric`` / ``wrapgrad.attack``);
Quantus metrics are registered by the Quantus plugin as ``quantus_<snake case>``, so a file's
``quantus = "MaxSensitivity"`` is short for ``name = "quantus_max_sensitivity"``. A metric is
called as its spec's ``requires`` says: ``"mask"`` with the maps and a ground-truth mask,
``"maps"`` with the maps and those of another enhancer of the same model, ``"model"`` with the
model, inputs, labels and the variant's ``explain``, which serves the maps already computed for
the evaluated inputs (:class:`KnownMaps`) and re-explains anything else.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor

from wrapgrad.checks import check_positive_int
from wrapgrad.errors import UnavailableError, UnknownNameError, closest
from wrapgrad.records import Spec
from wrapgrad.sharding import Unit, run_sharded
from wrapgrad_pipeline import sharded
from wrapgrad_pipeline.context import RunContext
from wrapgrad_pipeline.plan import Plan, ScoreColumn
from wrapgrad_pipeline.schema import checked, setting
from wrapgrad_pipeline.smoke import SIZES, capped

__all__ = [
    "ATTACK_SCORES",
    "QUANTUS_PREFIX",
    "AttackTable",
    "CachedExplain",
    "EvaluateStep",
    "EvaluateTable",
    "KnownMaps",
    "MetricTable",
]

#: The attack result's map-to-map scores reported by default.
ATTACK_SCORES = ("topk_intersection", "kendall_tau", "spearman_rho")
#: How the Quantus plugin names Quantus metrics (``wrapgrad_quantus.metric_name``).
QUANTUS_PREFIX = "quantus_"


@attrs.frozen(kw_only=True)
class MetricTable:
    """Every metric runs on every method × variant. For localisation
    metrics the maps are summed over channels (one relevance per pixel). A cell that cannot be
    computed (e.g. an all-zero map Quantus refuses) is recorded with its error and reported as
    n/a."""

    label: str | None = setting(
        None, default_doc="the metric's name", doc="the row in the report; distinct"
    )
    name: str | None = setting(
        None,
        default_doc="—",
        doc="a registered metric (`wrapgrad plugins --kind metric`; Quantus' metrics are "
        "`quantus_<snake case>`)",
    )
    quantus: str | None = setting(
        None,
        default_doc="—",
        doc="a Quantus metric class name (`RelevanceRankAccuracy`, `FaithfulnessCorrelation`, "
        '`MaxSensitivity`, `Sparseness`, ...), short for `name = "quantus_<snake case>"`; '
        "exactly one of `name` and `quantus`",
    )
    params: Mapping[str, Any] = setting(
        factory=dict,
        doc="the metric's parameters (checked against its options); `seed`, `abs` and "
        "`batch_size` default to `[pipeline].seed`, `[explain].absolute` and "
        "`[explain].batch_size` for metrics that take them (Quantus' perturbations are seeded)",
    )
    masks: tuple[str, ...] = setting(
        (),
        doc="for mask-based metrics (Quantus localisation metrics, `localisation_auc`): "
        'ground-truth masks of the data set (`cmnist`: `"digit"`, `"square"`; checked before '
        "any training); one row per mask, `label[mask]`",
    )
    against: str | None = setting(
        None,
        doc="for map-to-map metrics: the enhancer label whose maps (of the same model) to "
        "compare with",
    )
    higher_is_better: bool | None = setting(
        None,
        default_doc="from the metric",
        doc="the direction used for bold-facing and expectations",
    )
    samples: int | None = setting(
        None,
        type="integer ≥ 1",
        default_doc="all",
        doc="score only the first `samples` evaluated items (for expensive metrics such as "
        "`MaxSensitivity`)",
        validator=checked(check_positive_int, optional=True),
    )
    methods: tuple[str, ...] = setting(
        (),
        default_doc="every method",
        doc="the methods it scores (a costly metric on the cheap methods only); the others "
        "have no scores for it (n/a in the report)",
    )
    fresh_noise: bool = setting(
        False,
        doc="for metrics that re-explain (MaxSensitivity, `sensitivity`, ...): every "
        "re-explanation draws new enhancer noise (the NoiseGrad paper's setup, where an "
        "enhanced map is a random estimate), from a generator seeded from `[pipeline].seed` "
        "and the metric, so the run repeats; the further enhancer seeds of a variant replay the "
        "first seed's re-explanations (their seeded perturbations are the same), so each "
        "seed's maps are compared with the same fresh draws. Default `false`: a "
        "re-explanation uses the same seed as the maps it is compared with, i.e. the "
        "sensitivity of the seeded (deterministic) explanation a user gets from `wrap(..., "
        "seed=)`, with the Monte-Carlo noise held fixed",
    )


@attrs.frozen(kw_only=True)
class AttackTable:
    """Every attack runs on every method × variant; the report's rows
    are `label:score`."""

    label: str | None = setting(
        None, default_doc="the attack's name", doc="the rows are `label:score`"
    )
    name: str = setting(doc="a registered attack (`ifia`, `adversarial_ifia`)")
    params: Mapping[str, Any] = setting(
        factory=dict,
        doc="the attack's parameters (`objective`, `epsilon`, `steps`, `k`, `bounds`, ...; "
        "checked); `seed` defaults to `[pipeline].seed`",
    )
    samples: int = setting(
        32,
        type="integer ≥ 1",
        doc="the first `samples` evaluated items are attacked",
        validator=checked(check_positive_int),
    )
    scores: tuple[str, ...] = setting(
        ATTACK_SCORES,
        doc="map-to-map scores (before vs after) to report; each must be one the attack "
        "computes (checked)",
    )


@attrs.frozen(kw_only=True)
class EvaluateTable:
    """Metrics and attribution attacks (`[[evaluate.metrics]]` and `[[evaluate.attacks]]`)."""

    metrics: tuple[MetricTable, ...] = setting((), doc="see below")
    attacks: tuple[AttackTable, ...] = setting((), doc="see below")


def _content_key(value: Any) -> Any:
    """A hashable key of a tensor's shape, dtype, device and bytes (None: not a tensor)."""
    if not isinstance(value, Tensor):
        return value if value is None or isinstance(value, (int, str)) else NotImplemented
    t = value.detach()
    data = t.contiguous().cpu().numpy().tobytes()
    return (tuple(t.shape), str(t.dtype), str(t.device), hashlib.blake2b(data).hexdigest())


class CachedExplain:
    """An ``explain`` whose calls the further enhancer seeds of a variant replay.

    The first seed's metric call explains afresh and records each call; :meth:`replay` starts
    a later seed's call, whose ``k``-th call gets the ``k``-th recorded maps when its inputs and
    target equal (by content) those of the recorded call, since the metric's own perturbations
    are seeded the same. Any other call, and every call of the first seed (two calls with equal
    inputs included), explains afresh. Its other attributes are ``explain``'s.
    """

    def __init__(self, explain: Any) -> None:
        self._explain = explain
        self._record: list[tuple[Any, Tensor]] = []
        self._position: int | None = None  # None: recording

    def __getattr__(self, name: str) -> Any:
        return getattr(self._explain, name)

    def replay(self) -> None:
        """Start replaying the recorded calls (a later enhancer seed's metric call)."""
        self._position = 0

    def __call__(self, inputs: Any, target: Any = None, **kwargs: Any) -> Any:
        plain = not kwargs and isinstance(inputs, Tensor)
        key = (_content_key(inputs), _content_key(target)) if plain else None
        if key is not None and NotImplemented in key:
            key = None
        if self._position is not None:
            k = self._position
            self._position += 1
            if key is not None and k < len(self._record) and self._record[k][0] == key:
                return self._record[k][1].clone()
            return self._explain(inputs, target=target, **kwargs)
        out = self._explain(inputs, target=target, **kwargs)
        if key is not None and isinstance(out, Tensor):
            self._record.append((key, out.detach().clone()))
        else:
            self._record.append((None, torch.empty(0)))  # keeps the positions aligned
        return out


class KnownMaps:
    """An ``explain`` that serves the maps already computed for ``inputs`` (this very tensor,
    the same target, no other arguments) and explains anything else with ``explain``; its other
    attributes (``model``, ``explainer``, ``enhancer``, ...) are ``explain``'s."""

    def __init__(self, explain: Any, inputs: Tensor, target: Tensor, maps: Tensor) -> None:
        self._explain = explain
        self._inputs = inputs
        self._target = target
        self._maps = maps

    def __getattr__(self, name: str) -> Any:
        return getattr(self._explain, name)

    def __call__(self, inputs: Any, target: Any = None, **kwargs: Any) -> Any:
        same_target = target is self._target or (
            isinstance(target, Tensor)
            and target.shape == self._target.shape
            and target.device == self._target.device
            and torch.equal(target, self._target)
        )
        if inputs is self._inputs and same_target and not kwargs:
            return self._maps.clone()
        return self._explain(inputs, target=target, **kwargs)


def _defaults(spec: Spec, params: Mapping[str, Any], context: RunContext) -> dict[str, Any]:
    """``params`` with the pipeline's defaults for the options ``spec`` names."""
    names, _ = spec.option_names()
    explain = context.tables["explain"]
    out = dict(params)
    for key, value in (
        ("seed", context.seed),
        ("abs", explain.absolute),
        ("batch_size", explain.batch_size),
    ):
        if key in names:
            out.setdefault(key, value)
    return out


def _seed_mean(per_seed: list[list[float]]) -> list[float]:
    """The per-sample mean over enhancer seeds (NaN where every seed is NaN)."""
    arr = np.asarray(per_seed, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        return [float(v) for v in np.nanmean(arr, axis=0)]


def _fresh_generator(x: Tensor, seed: int, metric: str, variant: str) -> torch.Generator:
    """The generator of a metric's fresh re-explanations of one variant: seeded from the
    pipeline (or metric) seed, the metric and the variant, so a run repeats while no two cells,
    and no explain-step seed, share draws."""
    words = np.frombuffer(hashlib.blake2b(f"{metric}|{variant}".encode()).digest()[:8], "<u4")
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x6672657368, *words.tolist()])
    g = torch.Generator(device=x.device)
    g.manual_seed(int(state.generate_state(1, np.uint64)[0]) & (2**63 - 1))
    return g


def _per_sample(out: Any) -> np.ndarray:
    """A metric's scores as a flat float64 array (a tensor on any device, or array-like)."""
    if isinstance(out, Tensor):
        return out.detach().double().reshape(-1).cpu().numpy()
    return np.asarray(out, dtype=np.float64).reshape(-1)


def _capped(m: Any, n: int) -> int:
    """How many of a method's ``n`` explained samples metric ``m`` scores (its `samples` cap)."""
    return n if m.samples is None else min(m.samples, n)


def _scored(m: Any, context: RunContext) -> dict[str, int]:
    """How many samples a metric scores per method: its `samples` cap, or fewer where the method
    explained fewer ([explain].method_samples)."""
    out = {}
    for method, variants in context.explanations.items():
        if m.methods and method not in m.methods:
            continue
        out[method] = _capped(m, max((int(ex.raw.shape[0]) for ex in variants.values()), default=0))
    return out


class EvaluateStep:
    """Scores every method x variant with every metric and attack, one global batch at a time
    (spread over the ranks of a distributed run, :mod:`wrapgrad_pipeline.sharded`)."""

    sharded = True

    # -- check ---------------------------------------------------------------------------------
    def check(self, table: EvaluateTable, plan: Plan) -> EvaluateTable:
        metrics = tuple(
            self._check_metric(plan, m, f"[evaluate].metrics[{i}]")
            for i, m in enumerate(table.metrics)
        )
        labels = [m.label for m in metrics]
        if len(set(labels)) != len(labels):
            raise plan.fail("[evaluate].metrics", f"expected distinct labels, got {labels!r}")
        attacks = tuple(
            self._check_attack(plan, a, f"[evaluate].attacks[{i}]")
            for i, a in enumerate(table.attacks)
        )
        for m in metrics:
            keys = [f"{m.label}[{mask}]" for mask in m.masks] or [str(m.label)]
            plan.scores += [ScoreColumn(k, str(m.label), m.higher_is_better) for k in keys]
        for a in attacks:
            plan.scores += [ScoreColumn(f"{a.label}:{s}", f"{a.label}:{s}", True) for s in a.scores]
        return attrs.evolve(table, metrics=metrics, attacks=attacks)

    @staticmethod
    def _quantus(plan: Plan, value: str, where: str) -> Spec:
        from wrapgrad.registry import get_registry

        try:
            return get_registry().get("metric", QUANTUS_PREFIX + value)
        except UnavailableError as exc:
            raise plan.fail(where, f"{value!r} is not available: {exc.reason}") from None
        except UnknownNameError:
            known = [
                n[len(QUANTUS_PREFIX) :]
                for n in get_registry().names("metric")
                if n.startswith(QUANTUS_PREFIX)
            ]
            raise plan.unknown(where, value, known, "Quantus metric") from None

    def _check_metric(self, plan: Plan, m: MetricTable, f: str) -> MetricTable:
        from wrapgrad.registry import get_registry

        if (m.name is None) == (m.quantus is None):
            raise plan.fail(
                f,
                "expected exactly one of 'name' (a wrapgrad metric) or 'quantus' (a Quantus "
                "metric class)",
            )
        if m.quantus is not None:
            spec = self._quantus(plan, m.quantus, f"{f}.quantus")
        else:
            spec = plan.component("metric", m.name, f"{f}.name")
        if getattr(spec, "requires", "model") == "mosaic":
            raise plan.fail(
                f"{f}.quantus" if m.quantus is not None else f"{f}.name",
                f"{spec.name} scores 2x2 mosaics of images with the positions of the target "
                "class's tiles (the metric form 'mosaic'), which a pipeline does not build; call "
                "it from Python as metric(model, mosaics, target, explain, positions)",
            )
        plan.check_options(spec, m.params, f"{f}.params")
        dataset = get_registry().get("dataset", plan.tables["data"].dataset)
        declared = tuple(getattr(dataset, "masks", ()) or ())
        for j, mask in enumerate(m.masks):
            if declared and mask not in declared:
                # Known from the data set's registry record: refused before any data is built.
                near = closest(mask, declared)
                raise plan.fail(
                    f"{f}.masks[{j}]",
                    f"expected one of the data set's masks {list(declared)}, got {mask!r}"
                    + (f"; did you mean {near[0]!r}?" if near else ""),
                )
            plan.masks.setdefault(mask, f"{f}.masks[{j}]")
        requires = getattr(spec, "requires", "model")
        if requires == "mask":
            if not m.masks:
                raise plan.fail(
                    f"{f}.masks",
                    f"missing; {spec.name} compares maps with ground-truth masks: expected a list "
                    f'of mask names (e.g. ["digit", "square"])',
                )
            if not getattr(dataset, "has_masks", False) and not declared:
                raise plan.fail(
                    f"{f}.masks", f"the data set {dataset.name!r} has no ground-truth masks"
                )
        elif m.masks:
            raise plan.fail(
                f"{f}.masks", f"expected no masks: {spec.name} does not use ground-truth masks"
            )
        if requires == "maps":
            if m.against is None:
                raise plan.fail(
                    f"{f}.against",
                    f"missing; {spec.name} compares two maps: expected the label of the enhancer "
                    f"to compare with, one of {plan.enhancers}",
                )
            if m.against not in plan.enhancers:
                raise plan.unknown(f"{f}.against", m.against, plan.enhancers, "enhancer label")
        elif m.against is not None:
            raise plan.fail(
                f"{f}.against", f"expected no 'against': {spec.name} does not compare two maps"
            )
        methods = []
        for j, method in enumerate(m.methods):
            name = plan.component("explainer", method, f"{f}.methods[{j}]").name
            if name not in plan.methods:
                raise plan.unknown(f"{f}.methods[{j}]", method, plan.methods, "method")
            methods.append(name)
        if m.fresh_noise:
            if requires != "model":
                raise plan.fail(
                    f"{f}.fresh_noise",
                    f"expected no fresh_noise: {spec.name} does not explain again (it reads the "
                    f"maps only)",
                )
            self._check_fresh_noise(plan, f"{f}.fresh_noise")
        hib = m.higher_is_better
        if hib is None:
            hib = getattr(spec, "higher_is_better", None)
        return attrs.evolve(
            m,
            name=spec.name,
            label=m.label or m.quantus or spec.name,
            higher_is_better=hib,
            methods=tuple(methods),
        )

    @staticmethod
    def _check_fresh_noise(plan: Plan, field: str) -> None:
        """Fresh noise needs enhancers that draw from a ``generator``."""
        from wrapgrad.registry import get_registry

        explain = plan.tables.get("explain")
        for i, e in enumerate(getattr(explain, "enhancers", ())):
            if e.name is None:
                continue
            names, open_ = get_registry().get("enhancer", e.name).option_names()
            if not open_ and "generator" not in names:
                raise plan.fail(
                    field,
                    f"expected enhancers that take a generator, got {e.name!r} "
                    f"([explain].enhancers[{i}]), which cannot draw fresh noise per call",
                )

    @staticmethod
    def _check_attack(plan: Plan, a: AttackTable, f: str) -> AttackTable:
        spec = plan.component("attack", a.name, f"{f}.name")
        plan.check_options(spec, a.params, f"{f}.params")
        known = tuple(getattr(spec.factory, "scores", ATTACK_SCORES))
        for j, score in enumerate(a.scores):
            if score not in known:
                raise plan.unknown(f"{f}.scores[{j}]", score, known, f"score of attack {spec.name}")
        return attrs.evolve(a, name=spec.name, label=a.label or spec.name)

    # -- smoke ---------------------------------------------------------------------------------
    def shrink(self, table: EvaluateTable) -> EvaluateTable:
        from wrapgrad.registry import get_registry

        reg = get_registry()
        n = SIZES["samples"]
        return attrs.evolve(
            table,
            metrics=tuple(
                attrs.evolve(
                    m,
                    params=capped(m.params, reg.get("metric", str(m.name)).smoke_caps()),
                    samples=None if m.samples is None else min(m.samples, n),
                )
                for m in table.metrics
            ),
            attacks=tuple(
                attrs.evolve(
                    a,
                    params=capped(a.params, reg.get("attack", a.name).smoke_caps()),
                    samples=min(a.samples, SIZES["attack_samples"]),
                )
                for a in table.attacks
            ),
        )

    def outputs(self, table: EvaluateTable) -> tuple[str, ...]:
        return ()

    # -- run -----------------------------------------------------------------------------------
    def run(self, table: EvaluateTable, context: RunContext) -> None:
        context.scores = {
            method: {v: {} for v in context.variants} for method in context.explanations
        }
        context.scores_by_seed = {
            method: {v: {} for v in context.variants} for method in context.explanations
        }
        rows: list[dict[str, Any]] = []
        for m in table.metrics:
            for mask in m.masks or (None,):
                rows.append(
                    {
                        "key": f"{m.label}[{mask}]" if mask else m.label,
                        "label": m.label,
                        "mask": mask,
                        "higher_is_better": m.higher_is_better,
                        "source": f"metric:{m.name}",
                        "params": dict(m.params),
                        "fresh_noise": m.fresh_noise,
                        "methods": list(m.methods),
                        "samples": m.samples,
                        "scored": _scored(m, context),
                    }
                )
        context.results["metrics"] = rows
        context.results["metric_timings_s"] = self._metrics(table, context)
        context.results["attacks"] = self._attacks(table, context, rows)
        context.results["scores"] = context.scores
        context.results["scores_by_seed"] = context.scores_by_seed

    def _metrics(self, table: EvaluateTable, context: RunContext) -> dict[str, float]:
        """Every metric cell, one global batch at a time (spread over the ranks of a
        distributed run): a batch's seeded parameters, fresh noise and re-explanations are
        seeded from the batch's global index, so the scores do not depend on the ranks."""
        from tqdm.auto import tqdm

        from wrapgrad.evaluation import metric as build_metric
        from wrapgrad.registry import get_registry

        data = context.data
        seconds: dict[str, float] = {}
        jobs = [
            (m, method, v)
            for m in table.metrics
            for method in context.explanations
            if not m.methods or method in m.methods
            for v in context.variants
        ]
        units = sharded.units(context, int(data.inputs.shape[0]))
        bar = tqdm(total=len(units), desc="evaluate", disable=not context.progress, leave=False)

        def work(unit: Unit) -> dict[str, Any]:
            torch.manual_seed(unit.seed(context.seed, "evaluate"))
            scores: dict[str, list[list[float]]] = {}
            errors: list[dict[str, str]] = []
            for m, method, v in jobs:
                started = time.perf_counter()
                spec = get_registry().get("metric", str(m.name))
                params = _defaults(spec, m.params, context)
                ex = context.explanations[method][v]
                n = int(ex.raw.shape[0])  # the method's samples ([explain].method_samples)
                k = unit.take(_capped(m, n)).stop
                if k == 0:
                    continue
                batch = slice(unit.start, unit.start + k)
                x, y = data.inputs[batch], data.labels[batch]
                base = params.get("seed", context.seed)
                if "seed" in params:
                    params["seed"] = unit.seed(base, "metric")
                model = context.models[ex.variant.model].model
                reexplain = None
                if m.fresh_noise and ex.rebuild is not None and spec.requires == "model":
                    seed = unit.seed(base, "fresh")
                    reexplain = CachedExplain(
                        ex.rebuild(seed=None, generator=_fresh_generator(x, seed, str(m.label), v))
                    )
                for mask in m.masks or (None,):
                    key = f"{m.label}[{mask}]" if mask else str(m.label)
                    per_seed = []
                    for r, run in enumerate(ex.runs()):
                        if reexplain is not None and r > 0:
                            reexplain.replay()
                        try:
                            metric = build_metric(str(m.name), **params)
                            if spec.requires == "mask":
                                out = metric(run.maps[batch], data.masks[mask][batch])
                            elif spec.requires == "maps":
                                other = next(
                                    var.label
                                    for var in context.variants.values()
                                    if var.model == ex.variant.model and var.enhancer == m.against
                                )
                                runs = context.explanations[method][other].runs()
                                against = runs[min(len(per_seed), len(runs) - 1)]
                                out = metric(run.maps[batch], against.maps[batch])
                            else:
                                explain = run.explain_for(unit) if reexplain is None else reexplain
                                out = metric(model, x, y, KnownMaps(explain, x, y, run.raw[batch]))
                            vals = _per_sample(out)
                        except Exception as exc:  # one degenerate cell must not sink the whole run
                            errors.append(
                                {
                                    "metric": key,
                                    "method": method,
                                    "enhancer": v,
                                    "error": f"{type(exc).__name__}: {exc}".strip()[:500],
                                }
                            )
                            vals = np.full(k, np.nan)
                        per_seed.append([float(s) for s in vals])
                    scores[f"{method}|{v}|{key}"] = per_seed
                spent = time.perf_counter() - started
                seconds[str(m.label)] = seconds.get(str(m.label), 0.0) + spent
            bar.update(1)
            return {"scores": scores, "errors": errors}

        parts = run_sharded(
            units, work, what="evaluate", store=sharded.shard_store(context, "evaluate")
        )
        bar.close()
        for m, method, v in jobs:
            for mask in m.masks or (None,):
                key = f"{m.label}[{mask}]" if mask else str(m.label)
                rows = [
                    p["scores"][cell]
                    for p in parts
                    if (cell := f"{method}|{v}|{key}") in p["scores"]
                ]
                per_seed = [
                    [s for row in rows for s in row[r]]
                    for r in range(len(context.explanations[method][v].runs()))
                ]
                context.scores_by_seed[method][v][key] = per_seed
                context.scores[method][v][key] = _seed_mean(per_seed)
        errors = [e for p in parts for e in p["errors"]]
        for i, error in enumerate(errors):  # a cell that fails in several batches: noted once
            if error not in errors[:i]:
                context.record_error(**error)
        return {label: round(t, 3) for label, t in seconds.items()}

    def _attacks(
        self, table: EvaluateTable, context: RunContext, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        from tqdm.auto import tqdm

        from wrapgrad.evaluation import attack as build_attack
        from wrapgrad.registry import get_registry

        data = context.data
        units = sharded.units(context, int(data.inputs.shape[0]))
        jobs = [(method, v) for method in context.explanations for v in context.variants]
        out = []
        for a in table.attacks:
            record: dict[str, Any] = {
                "label": a.label,
                "name": a.name,
                "params": dict(a.params),
                "runs": {},
            }
            for score in a.scores:
                rows.append(
                    {
                        "key": f"{a.label}:{score}",
                        "label": f"{a.label}:{score}",
                        "mask": None,
                        "higher_is_better": True,
                        "source": f"attack:{a.name}",
                        "params": dict(a.params),
                    }
                )
            params = _defaults(get_registry().get("attack", a.name), a.params, context)
            bar = tqdm(
                total=len(units),
                desc=f"attack {a.label}",
                disable=not context.progress,
                leave=False,
            )

            def work(unit: Unit, a: AttackTable = a, params: dict = params, bar: Any = bar) -> Any:
                """One global batch of the attack on every method and variant (its ``seed``
                derived from the batch's global index)."""
                torch.manual_seed(unit.seed(context.seed, "attack"))
                out: dict[str, dict[str, Any]] = {}
                for method, v in jobs:
                    ex = context.explanations[method][v]
                    n = unit.take(min(a.samples, int(ex.raw.shape[0]))).stop
                    if n == 0:
                        continue
                    batch = slice(unit.start, unit.start + n)
                    x, y = data.inputs[batch], data.labels[batch]
                    model = context.models[ex.variant.model].model
                    options = dict(params)
                    if "seed" in options:
                        options["seed"] = unit.seed(options["seed"], "attack")
                    result = build_attack(a.name, **options)(
                        model, x, y, KnownMaps(ex.explain_for(unit), x, y, ex.raw[batch])
                    )
                    for score in a.scores:
                        if score not in result.metrics:
                            raise context.fail(
                                f"[evaluate].attacks {a.label!r}.scores",
                                f"{score!r} is not one of the attack's scores "
                                f"{sorted(result.metrics)}",
                            )
                    per_sample = {
                        score: torch.as_tensor(result.metrics[score]).double().reshape(-1)
                        for score in a.scores
                    }
                    per_sample["label_kept"] = result.label_kept.double().reshape(-1)
                    per_sample["perturbation"] = result.perturbation_norm().double().reshape(-1)
                    for name in ("objective_before", "objective_after"):
                        value = getattr(result, name)
                        per_sample[name] = torch.as_tensor(value).double().reshape(-1)
                    out[f"{method}|{v}"] = {k: t.cpu() for k, t in per_sample.items()}
                bar.update(1)
                return out

            parts = run_sharded(
                units,
                work,
                what=f"attack {a.label}",
                store=sharded.shard_store(context, f"attack-{a.label}"),
            )
            bar.close()
            for method, v in jobs:
                found = [p[f"{method}|{v}"] for p in parts if f"{method}|{v}" in p]
                cat = {key: torch.cat([f[key] for f in found]) for key in found[0]}
                for score in a.scores:
                    vals = cat[score].tolist()
                    context.scores[method][v][f"{a.label}:{score}"] = vals
                    # attacks run on the first enhancer seed's maps only
                    context.scores_by_seed[method][v][f"{a.label}:{score}"] = [vals]
                record["runs"].setdefault(method, {})[v] = {
                    "label_kept": float(cat["label_kept"].float().mean()),
                    "perturbation": float(cat["perturbation"].float().mean()),
                    "objective_before": cat["objective_before"].tolist(),
                    "objective_after": cat["objective_after"].tolist(),
                }
            out.append(record)
        return out
