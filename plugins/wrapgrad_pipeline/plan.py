"""Reading a whole pipeline file: the steps it runs, in order, each table checked.

:func:`validate` is what ``Pipeline.from_file`` runs: it finds the installed steps (the
``wrapgrad_pipeline_steps`` hook; the built-in ones are this plugin's), keeps those whose table
the file has (or that run ``always``), orders them by what they ``need`` and ``provide``, checks
that every need is met, then reads each table into its record and hands it to the step's
``check`` together with the :class:`Plan`: what the earlier steps declared (model labels,
variants, score columns, calibrations). A step may also have ``finish(table, plan) -> table``,
called once every step is checked, for what depends on later steps (the data step takes the
train/test split seed the model steps declared). Nothing heavy runs: names are looked up in the registry,
no data is loaded and no model is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from wrapgrad.errors import UnavailableError, UnknownNameError, WrapgradError
from wrapgrad.records import PipelineStepSpec, Spec
from wrapgrad.registry import Registry, get_registry, use_registry
from wrapgrad_pipeline.schema import (
    PipelineError,
    PipelineNameError,
    read_named,
    read_record,
    setting,
)

__all__ = [
    "PipelineConfig",
    "PipelineTable",
    "Plan",
    "ScoreColumn",
    "installed_steps",
    "order_steps",
    "validate",
    "variant_label",
]


def _non_empty(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not value.strip():
        raise ValueError(f"{attribute.name}: expected a non-empty name, got {value!r}")


@attrs.frozen(kw_only=True)
class PipelineTable:
    """The run's name and the seed every other table defaults to."""

    name: str = setting(
        doc="the run's name (report title; default output folder `runs/<name>`)",
        validator=_non_empty,
    )
    description: str = setting("", doc="shown under the report's title")
    seed: int = setting(
        0,
        doc="the default seed of every table and component that takes one: data split, "
        "training, calibration, enhancers, metrics, attacks, Quantus' perturbations",
    )


@attrs.frozen
class ScoreColumn:
    """A score a step will compute per method, variant and sample (a row of the report)."""

    key: str
    """The key in ``scores[method][variant]`` (``"localisation[digit]"``, ``"ifia:kendall_tau"``)."""
    label: str
    """The label it was declared under (``"localisation"``: every mask)."""
    higher_is_better: bool | None


def variant_label(model: str, enhancer: str, n_models: int, n_enhancers: int) -> str:
    """The label a (model, enhancer) pair is reported under: the enhancer label when there is one
    model (``"NG"``), the model label when there is one enhancer (``"AAT"``), else both
    (``"AAT/NG"``)."""
    if n_models == 1:
        return enhancer
    if n_enhancers == 1:
        return model
    return f"{model}/{enhancer}"


class Plan:
    """What a step's ``check`` sees while the file is read: the file, ``[pipeline]``, the tables
    checked so far (by step name) and what the earlier steps declared.

    Attributes:
        file: the file name errors start with.
        pipeline: the ``[pipeline]`` record (``plan.seed`` is its seed).
        tables: checked tables by step name (``plan.tables["data"].dataset``).
        models: labels of the models the run will have, in order (a step that provides
            ``"models"`` adds its labels with :meth:`add_model`).
        methods, enhancers: the explanation methods and enhancer labels (the explain step).
        variants: the labels of the (model, enhancer) variants (:func:`variant_label`).
        scores: the score columns, in report order (the evaluate step).
        levels: the noise-level calibrations (the calibration step): name -> the levels it
            sets (``("sigma",)``, ``("noise_level",)`` or both).
        masks: ground-truth mask names some step needs, with the field that names each (the
            data step checks them against the data set once it is loaded).
        split_seeds: model label -> ``(split seed, field)``: the train/test split seed each
            model was trained on, where its step knows it (:meth:`add_model`); the data step
            loads that split, so no evaluated or held-out item is a training item.
        groups: group label -> the labels of its models (replicates, e.g. one objective's
            training seeds; :meth:`add_model`); the report aggregates each group.
    """

    def __init__(self, file: str, pipeline: PipelineTable) -> None:
        self.file = file
        self.pipeline = pipeline
        self.tables: dict[str, Any] = {}
        self.models: list[str] = []
        self.methods: list[str] = []
        self.enhancers: list[str] = []
        self.variants: list[str] = []
        self.scores: list[ScoreColumn] = []
        self.levels: dict[str, tuple[str, ...]] = {}
        self.masks: dict[str, str] = {}
        self.split_seeds: dict[str, tuple[int, str]] = {}
        self.groups: dict[str, list[str]] = {}

    @property
    def seed(self) -> int:
        return self.pipeline.seed

    def fail(self, field: str, message: str) -> PipelineError:
        """The error to raise for ``field`` (``"[data].samples"``)."""
        return PipelineError(self.file, field, message)

    def unknown(self, field: str, name: str, known: Any, what: str) -> PipelineNameError:
        """The error to raise for an unknown name, with the closest known ones."""
        return PipelineNameError(self.file, field, name, known, what)

    def component(self, kind: str, name: Any, field: str) -> Spec:
        """The registered component ``name`` of ``kind``, or an error naming ``field``."""
        if not isinstance(name, str):
            raise self.fail(field, f"expected a {kind} name (a string), got {name!r}")
        try:
            return get_registry().get(kind, name)
        except UnavailableError as exc:
            raise self.fail(field, f"{name!r} is not available: {exc.reason}") from None
        except UnknownNameError as exc:
            raise self.unknown(field, name, exc.known, kind) from None

    def recipe(self, model: str, dataset: str, overrides: Mapping[str, Any], field: str) -> Any:
        """The training recipe of the registered ``model`` on ``dataset`` with ``overrides``
        (:func:`wrapgrad.catalog.recipe`), or an error naming ``field`` (``"[model].recipe"``;
        an unknown override as ``<field>.<name>``, with the closest recipe options)."""
        from wrapgrad.catalog import recipe

        try:
            return recipe(model, dataset, **dict(overrides))
        except UnknownNameError as exc:
            raise self.unknown(
                f"{field}.{exc.name}", exc.name, exc.known, "recipe option"
            ) from None
        except WrapgradError as exc:
            raise self.fail(field, str(exc)) from None

    def check_options(self, spec: Spec, options: Mapping[str, Any], field: str) -> None:
        """Refuse option names ``spec``'s component does not take (its declared options, else
        its factory's signature; see :meth:`~wrapgrad.records.Spec.option_names`)."""
        names, open_ = spec.option_names()
        if open_:
            return
        for key in options:
            if key not in names:
                raise self.unknown(
                    f"{field}.{key}", key, names, f"option of {spec.kind} {spec.name}"
                )

    def add_model(
        self,
        label: str,
        field: str,
        *,
        split_seed: int | None = None,
        split_field: str | None = None,
        group: str | None = None,
    ) -> None:
        """Declare a model the run will have (labels are distinct) and, where known, the seed
        of the train/test split it was trained on (``split_seed``, e.g. a recipe's
        ``data_seed``; ``split_field`` names where it comes from): the data step then evaluates
        and calibrates on that split's held-out part. ``group``: the model is a replicate of
        that group (e.g. one objective at several training seeds; its info then says
        ``"group"`` and ``"seed"``), which the report pools (:mod:`wrapgrad_pipeline.groups`)."""
        if label in self.models:
            raise self.fail(field, f"expected a model label not used yet, got {label!r}")
        self.models.append(label)
        if split_seed is not None:
            self.split_seeds[label] = (int(split_seed), split_field or field)
        if group is not None:
            self.groups.setdefault(group, []).append(label)


@attrs.frozen(kw_only=True)
class PipelineConfig:
    """A validated pipeline file: ``[pipeline]``, the steps in run order and their tables."""

    file: str
    pipeline: PipelineTable
    steps: tuple[str, ...]
    """The names of the steps that run, in order."""
    tables: Mapping[str, Any]
    """Each step's checked table, by step name."""
    variants: tuple[str, ...] = ()
    """The labels of the (model, enhancer) variants, in report order."""
    masks: Mapping[str, str] = attrs.field(factory=dict)
    """Ground-truth masks the steps need, with the field naming each (checked once the data set
    is loaded)."""

    @property
    def name(self) -> str:
        return self.pipeline.name

    @property
    def seed(self) -> int:
        return self.pipeline.seed


def installed_steps() -> dict[str, tuple[PipelineStepSpec, Any]]:
    """Every registered step of the current registry: name -> (spec, step object)."""
    return {
        name: (spec, spec.factory()) for name, spec in get_registry().specs("pipeline_step").items()
    }  # type: ignore[misc]


def order_steps(specs: Mapping[str, PipelineStepSpec]) -> list[str]:
    """The step names in run order: each after every step that provides what it needs; among
    the steps that may run next, those that provide an entry first (so a step that provides
    none, such as the report, which writes what the others found, runs after every step it
    could report on), then by name. A cycle is an error naming the steps in it."""
    providers: dict[str, set[str]] = {}
    for name, spec in specs.items():
        for entry in spec.provides:
            providers.setdefault(entry, set()).add(name)
    after = {
        name: {p for entry in spec.needs for p in providers.get(entry, ()) if p != name}
        for name, spec in specs.items()
    }
    order: list[str] = []
    left = dict(after)
    while left:
        ready = sorted(
            (n for n, deps in left.items() if deps <= set(order)),
            key=lambda n: (not specs[n].provides, n),
        )
        if not ready:
            raise PipelineError(
                "pipeline steps",
                "needs",
                f"expected steps whose needs and provides form no cycle, got {sorted(left)}",
            )
        order.append(ready[0])
        del left[ready[0]]
    return order


def validate(
    raw: Mapping[str, Any], file: str = "<pipeline>", *, registry: Registry | None = None
) -> PipelineConfig:
    """Check a parsed pipeline file and return its :class:`PipelineConfig`.

    Raises:
        PipelineError: naming ``file``, the table/field and the expected value.
        PipelineNameError: for an unknown plugin name, table or field, with the closest names.
    """
    with use_registry(registry):
        steps = installed_steps()
        tables = {spec.table: name for name, (spec, _) in steps.items() if spec.table}
        if not isinstance(raw, Mapping):
            raise PipelineError(file, "file", f"expected tables, got {type(raw).__name__}")
        for key in raw:
            if key != "pipeline" and key not in tables:
                raise PipelineNameError(file, f"[{key}]", key, ["pipeline", *tables], "table")
        if "pipeline" not in raw:
            raise PipelineError(file, "[pipeline]", "missing table; every pipeline needs one")
        pipeline = read_record(PipelineTable, raw["pipeline"], "[pipeline]", file)
        running = {n: s for n, (s, _) in steps.items() if s.always or (s.table and s.table in raw)}
        _check_needs(file, running, {n: s for n, (s, _) in steps.items()})
        order = order_steps(running)
        plan = Plan(file, pipeline)
        for name in order:
            spec, step = steps[name]
            table = _read(spec, raw.get(spec.table, {}), file)
            plan.tables[name] = step.check(table, plan)
        for name in order:  # cross-checks against what later steps declared
            finish = getattr(steps[name][1], "finish", None)
            if callable(finish):
                plan.tables[name] = finish(plan.tables[name], plan)
        return PipelineConfig(
            file=file,
            pipeline=pipeline,
            steps=tuple(order),
            tables=dict(plan.tables),
            variants=tuple(plan.variants),
            masks=dict(plan.masks),
        )


def _read(spec: PipelineStepSpec, raw: Any, file: str) -> Any:
    if spec.schema is None:
        return None
    if spec.named:
        return read_named(spec.schema, raw, spec.table, file)
    return read_record(spec.schema, raw, f"[{spec.table}]", file)


def _check_needs(
    file: str, running: Mapping[str, PipelineStepSpec], known: Mapping[str, PipelineStepSpec]
) -> None:
    provided = {entry for spec in running.values() for entry in spec.provides}
    for name, spec in sorted(running.items()):
        for entry in spec.needs:
            if entry in provided:
                continue
            providers = sorted(s.table for s in known.values() if entry in s.provides and s.table)
            if not providers:
                raise PipelineError(
                    file,
                    f"[{spec.table or name}]",
                    f"the {name} step needs {entry}, which no installed pipeline step provides",
                )
            alternatives = " or ".join(f"[{t}]" for t in providers)
            raise PipelineError(
                file,
                f"[{providers[0]}]",
                f"missing table; the {name} step needs {entry}, which {alternatives} provides",
            )
