"""Pipeline files: the schema, and its validation into frozen records.

A pipeline file is TOML (read with :mod:`tomllib`). Its tables, in the order they run::

    [pipeline]      name, description, seed
    [data]          an embedded data set (registered name), split, evaluated samples
    [model]         a reference model (registered name) trained with its recipe, or loaded
    [calibration.X] named noise-level calibrations (registered calibrators)
    [explain]       methods x enhancers; enhancer options may reference "@calibration.X.sigma"
    [evaluate]      metrics (wrapgrad's or Quantus' by name), attacks (registered names)
    [report]        output file names (inside the output directory), figures, expectations

The whole file is checked by :func:`validate` before anything runs: unknown tables and fields,
wrong types, missing fields, unknown plugin names (with the closest names), references to
calibrations that do not exist, and output paths that would leave the output directory. Errors
name the file, the table/field and what was expected. Nothing in a file can execute code: values
are data (strings, numbers, booleans, lists and tables of them), plugin components are looked up by
name in the registry, and Quantus metrics by class name in :mod:`quantus` only.
``docs/pipeline-reference.md`` lists every field.
"""

from __future__ import annotations

import inspect
import itertools
import re
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

import attrs

from wrapgrad.errors import UnknownNameError, WrapgradValueError, closest
from wrapgrad.registry import Registry, get_registry

__all__ = [
    "FIELDS",
    "AttackConfig",
    "CalibrationConfig",
    "DataConfig",
    "EnhancerConfig",
    "Expectation",
    "ExplainConfig",
    "MetricConfig",
    "ModelConfig",
    "PipelineConfig",
    "PipelineError",
    "PipelineNameError",
    "ReportConfig",
    "as_option",
    "check_output_path",
    "validate",
]

#: ``"@calibration.<name>.<field>"``: a noise level found by a ``[calibration.<name>]`` table,
#: optionally scaled: ``"@calibration.ng.sigma*0.5"`` (FusionGrad's "halve both" heuristic).
REFERENCE_RE = re.compile(
    r"^@calibration\.([A-Za-z0-9_+-]+)\.(sigma|alpha)(?:\*((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))?$"
)
SPLITS = ("train", "test", "all")
PERTURBERS = ("weight", "input")
_NO_ENHANCER = ("none", "baseline")
#: The attack result's map-to-map scores reported by default.
ATTACK_SCORES = ("topk_intersection", "kendall_tau", "spearman_rho")


class PipelineError(WrapgradValueError):
    """A pipeline file is invalid. ``file`` and ``field`` say where (``"[explain].methods[1]"``)."""

    def __init__(self, file: str, field: str | None = None, message: str | None = None) -> None:
        if field is None:  # a subclass passing its finished message along the MRO
            super().__init__(file)
            return
        self.file = file
        self.field = field
        super().__init__(f"{file}: {field}: {message}")


class PipelineNameError(UnknownNameError, PipelineError):
    """A pipeline file names a plugin component (or field) that does not exist."""

    def __init__(self, file: str, field: str, name: str, known: Any, what: str) -> None:
        self.file = file
        self.field = field
        UnknownNameError.__init__(self, f"{file}: {field}", name, known, what=what)


# -- records ---------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class DataConfig:
    dataset: str
    split: str = "test"
    samples: int = 128
    seed: int = 0
    options: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class ModelConfig:
    name: str
    seed: int = 0
    recipe: Mapping[str, Any] = attrs.field(factory=dict)
    weights: str | None = None
    """A state-dict file (relative to the pipeline file) to load instead of training."""


@attrs.frozen(kw_only=True)
class CalibrationConfig:
    name: str
    calibrator: str = "accuracy_drop"
    perturber: str = "weight"
    target_drop: float = 0.05
    samples: int = 500
    options: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class EnhancerConfig:
    label: str
    name: str | None = None
    """A registered enhancer; None: the plain method (the Baseline)."""
    options: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class ExplainConfig:
    methods: tuple[str, ...]
    enhancers: tuple[EnhancerConfig, ...]
    method_options: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    absolute: bool = True
    batch_size: int = 32


@attrs.frozen(kw_only=True)
class MetricConfig:
    label: str
    source: str
    """``"wrapgrad"`` (a registered metric) or ``"quantus"`` (a Quantus metric class)."""
    name: str
    params: Mapping[str, Any] = attrs.field(factory=dict)
    masks: tuple[str, ...] = ()
    against: str | None = None
    higher_is_better: bool | None = None
    requires: str = "model"
    """``"maps"``, ``"model"`` or ``"mask"`` (Quantus localisation metrics need a mask)."""
    samples: int | None = None
    """Score only the first ``samples`` evaluated items (expensive metrics); None: all."""


@attrs.frozen(kw_only=True)
class AttackConfig:
    label: str
    name: str
    params: Mapping[str, Any] = attrs.field(factory=dict)
    samples: int = 32
    scores: tuple[str, ...] = ATTACK_SCORES


@attrs.frozen(kw_only=True)
class Expectation:
    metric: str
    """A metric label (``"localisation"``) or key (``"localisation[digit]"``)."""
    order: tuple[str, ...] = ()
    """Enhancer labels from worst to best."""
    best: str | None = None
    alpha: float = 0.05


@attrs.frozen(kw_only=True)
class ReportConfig:
    markdown: str = "report.md"
    json: str = "results.json"
    figures: str = "figures"
    make_figures: bool = True
    grid_samples: int = 4
    expect: tuple[Expectation, ...] = ()
    expect_source: str = ""
    """Where the expectations come from (a sentence shown above them in the report)."""


@attrs.frozen(kw_only=True)
class PipelineConfig:
    name: str
    data: DataConfig
    model: ModelConfig
    explain: ExplainConfig
    report: ReportConfig = attrs.field(factory=ReportConfig)
    description: str = ""
    seed: int = 0
    calibration: Mapping[str, CalibrationConfig] = attrs.field(factory=dict)
    metrics: tuple[MetricConfig, ...] = ()
    attacks: tuple[AttackConfig, ...] = ()
    file: str = "<pipeline>"


def as_option(value: Any) -> Any:
    """A file value as a method option: TOML arrays become tuples (Captum wants tuples for
    shapes such as ``sliding_window_shapes``)."""
    if isinstance(value, list):
        return tuple(as_option(v) for v in value)
    return value


# -- checking helpers ------------------------------------------------------------------------
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _describe(value: Any) -> str:
    kind = {dict: "a table", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )
    return f"{kind} {value!r}" if not isinstance(value, (dict, list)) else kind


class _Checker:
    """Reads one file's parsed tables, raising :class:`PipelineError` naming the field."""

    def __init__(self, file: str, registry: Registry) -> None:
        self.file = file
        self.registry = registry

    def fail(self, field: str, message: str) -> PipelineError:
        return PipelineError(self.file, field, message)

    def table(self, value: Any, field: str, allowed: tuple[str, ...] | None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(field, f"expected a table, got {_describe(value)}")
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    raise PipelineNameError(self.file, f"{field}.{key}", key, allowed, "field")
        return value

    def get(
        self,
        tbl: dict[str, Any],
        field: str,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
        *,
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        where = f"{field}.{key}"
        if key not in tbl:
            if default is ...:
                raise self.fail(where, f"missing; expected {self._kinds(kind)}")
            return default
        value = tbl[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            ok, value = True, float(value)
        if not ok:
            raise self.fail(where, f"expected {self._kinds(kind)}, got {_describe(value)}")
        if check is not None:
            problem = check(value)
            if problem:
                raise self.fail(where, f"expected {problem}, got {value!r}")
        return value

    @staticmethod
    def _kinds(kind: type | tuple[type, ...]) -> str:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        names = [_TYPE_NAMES.get(k, "a table" if k is dict else "a list") for k in kinds]
        return " or ".join(names)

    def positive(self, tbl: dict[str, Any], field: str, key: str, default: Any = ...) -> int:
        return self.get(
            tbl, field, key, int, default, check=lambda v: None if v >= 1 else "an integer >= 1"
        )

    def name(self, kind: str, value: Any, field: str) -> str:
        if not isinstance(value, str):
            raise self.fail(field, f"expected a {kind} name (a string), got {_describe(value)}")
        try:
            return self.registry.get(kind, value).name
        except UnknownNameError as exc:
            raise PipelineNameError(self.file, field, value, exc.known, kind) from None

    def data_value(self, value: Any, field: str) -> Any:
        """Plain data only (what TOML can hold); refuses nothing else since TOML has nothing
        else, but guards Python-built pipelines against objects sneaking in."""
        if isinstance(value, dict):
            return {k: self.data_value(v, f"{field}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.data_value(v, f"{field}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, (str, int, float, bool)):
            return value
        raise self.fail(
            field, f"expected a string, number, boolean, list or table, got {type(value).__name__}"
        )

    def options_for(
        self, factory: Callable[..., Any], options: dict[str, Any], field: str, what: str
    ) -> None:
        """Refuse option names ``factory`` does not take (unless it takes ``**kwargs``)."""
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            return
        if any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return
        names = {
            n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        } - {"self"}
        for key in options:
            if key not in names:
                raise PipelineNameError(
                    self.file, f"{field}.{key}", key, names, f"option of {what}"
                )


def check_output_path(value: str, file: str = "<pipeline>", field: str = "path") -> str:
    """``value`` as a relative path that stays inside the output directory, else an error."""
    if not isinstance(value, str) or not value.strip():
        raise PipelineError(file, field, f"expected a relative path (a string), got {value!r}")
    posix, windows = PurePosixPath(value), PureWindowsPath(value)
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        raise PipelineError(
            file,
            field,
            f"expected a path inside the output directory, got the absolute path {value!r}",
        )
    depth = 0
    for part in re.split(r"[\\/]+", value):
        if part == "..":
            depth -= 1
        elif part not in ("", "."):
            depth += 1
        if depth < 0:
            raise PipelineError(
                file,
                field,
                f"expected a path inside the output directory, got {value!r}, which leaves it",
            )
    if depth == 0:
        raise PipelineError(file, field, f"expected a file or folder name, got {value!r}")
    return value


def _normal_parts(value: str) -> tuple[str, ...]:
    """The parts of a relative path with ``.`` and ``..`` resolved (it never leaves its root)."""
    parts: list[str] = []
    for part in re.split(r"[\\/]+", value):
        if part == "..":
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return tuple(parts)


def _quantus_metric(c: _Checker, value: Any, field: str) -> type:
    if not isinstance(value, str):
        raise c.fail(
            field, f"expected a Quantus metric class name (a string), got {_describe(value)}"
        )
    from wrapgrad.quantus_bridge import quantus_metrics

    known = quantus_metrics()
    if value not in known:
        raise PipelineNameError(c.file, field, value, known, "Quantus metric")
    return known[value]


# -- the tables --------------------------------------------------------------------------------
_TOP = ("pipeline", "data", "model", "calibration", "explain", "evaluate", "report")

#: Every table of a pipeline file and the fields it may hold (``docs/pipeline-reference.md``
#: documents exactly these; a test checks both ways).
FIELDS: dict[str, tuple[str, ...]] = {
    "pipeline": ("name", "description", "seed"),
    "data": ("dataset", "split", "samples", "seed", "options"),
    "model": ("name", "seed", "recipe", "weights"),
    "calibration.<name>": ("calibrator", "perturber", "target_drop", "samples", "options"),
    "explain": ("methods", "enhancers", "method_options", "absolute", "batch_size"),
    "explain.enhancers": ("label", "name", "options"),
    "evaluate": ("metrics", "attacks"),
    "evaluate.metrics": (
        "label",
        "name",
        "quantus",
        "params",
        "masks",
        "against",
        "higher_is_better",
        "samples",
    ),
    "evaluate.attacks": ("label", "name", "params", "samples", "scores"),
    "report": (
        "markdown",
        "json",
        "figures",
        "make_figures",
        "grid_samples",
        "expect",
        "expect_source",
    ),
    "report.expect": ("metric", "order", "best", "alpha"),
}


def validate(
    raw: Mapping[str, Any], file: str = "<pipeline>", *, registry: Registry | None = None
) -> PipelineConfig:
    """Check a parsed pipeline file and return its :class:`PipelineConfig`.

    Nothing heavy runs: names are checked against the registry (loading plugins) and Quantus'
    metric classes; no data is loaded and no model is built or trained.

    Raises:
        PipelineError: naming ``file``, the table/field and the expected value.
        PipelineNameError: for an unknown plugin name or field, with the closest names.
    """
    c = _Checker(file, registry or get_registry())
    top = c.table(dict(raw), "file", _TOP)
    for key in ("pipeline", "data", "model", "explain"):
        if key not in top:
            raise c.fail(
                f"[{key}]",
                "missing table; every pipeline needs [pipeline], [data], [model] and [explain]",
            )

    p = c.table(top["pipeline"], "[pipeline]", FIELDS["pipeline"])
    name = c.get(
        p, "[pipeline]", "name", str, check=lambda v: None if v.strip() else "a non-empty name"
    )
    description = c.get(p, "[pipeline]", "description", str, "")
    seed = c.get(p, "[pipeline]", "seed", int, 0)

    data = _data(c, top["data"], seed)
    model = _model(c, top["model"], data, seed)
    calibration = _calibrations(c, top.get("calibration", {}), seed)
    explain = _explain(c, top["explain"], calibration)
    metrics, attacks = _evaluate(c, top.get("evaluate", {}), data, explain)
    report = _report(c, top.get("report", {}), explain, metrics, attacks)
    return PipelineConfig(
        name=name,
        description=description,
        seed=seed,
        data=data,
        model=model,
        calibration=calibration,
        explain=explain,
        metrics=metrics,
        attacks=attacks,
        report=report,
        file=file,
    )


def _data(c: _Checker, value: Any, seed: int) -> DataConfig:
    f = "[data]"
    t = c.table(value, f, FIELDS["data"])
    dataset = c.name("dataset", c.get(t, f, "dataset", str), f"{f}.dataset")
    split = c.get(
        t, f, "split", str, "test", check=lambda v: None if v in SPLITS else f"one of {SPLITS}"
    )
    options = c.data_value(c.get(t, f, "options", dict, {}), f"{f}.options")
    spec = c.registry.get("dataset", dataset)
    c.options_for(
        spec.factory, {**options, "split": 0, "seed": 0}, f"{f}.options", f"data set {dataset}"
    )
    return DataConfig(
        dataset=dataset,
        split=split,
        samples=c.positive(t, f, "samples", 128),
        seed=c.get(t, f, "seed", int, seed),
        options=options,
    )


def _model(c: _Checker, value: Any, data: DataConfig, seed: int) -> ModelConfig:
    f = "[model]"
    t = c.table(value, f, FIELDS["model"])
    name = c.name("model", c.get(t, f, "name", str), f"{f}.name")
    recipe = c.data_value(c.get(t, f, "recipe", dict, {}), f"{f}.recipe")
    weights = c.get(t, f, "weights", str, None)
    spec = c.registry.get("model", name)
    if spec.recipe is not None and recipe:
        try:
            spec.recipe(data.dataset, **dict(recipe))
        except WrapgradValueError as exc:
            bad = str(exc).split(":", 1)[0]
            raise c.fail(f"{f}.recipe.{bad}", str(exc).split(":", 1)[-1].strip()) from None
    return ModelConfig(
        name=name, seed=c.get(t, f, "seed", int, seed), recipe=recipe, weights=weights
    )


def _calibrations(c: _Checker, value: Any, seed: int) -> dict[str, CalibrationConfig]:
    out: dict[str, CalibrationConfig] = {}
    for key, sub in c.table(value, "[calibration]", None).items():
        f = f"[calibration.{key}]"
        t = c.table(sub, f, FIELDS["calibration.<name>"])
        calibrator = c.name(
            "calibrator", c.get(t, f, "calibrator", str, "accuracy_drop"), f"{f}.calibrator"
        )
        options = c.data_value(c.get(t, f, "options", dict, {}), f"{f}.options")
        options.setdefault("seed", seed)
        out[key] = CalibrationConfig(
            name=key,
            calibrator=calibrator,
            perturber=c.get(
                t,
                f,
                "perturber",
                str,
                "weight",
                check=lambda v: None if v in PERTURBERS else f"one of {PERTURBERS}",
            ),
            target_drop=c.get(
                t,
                f,
                "target_drop",
                float,
                0.05,
                check=lambda v: None if 0 < v < 1 else "a relative accuracy drop in (0, 1)",
            ),
            samples=c.positive(t, f, "samples", 500),
            options=options,
        )
    return out


def _check_references(
    c: _Checker, options: dict[str, Any], field: str, calibration: Mapping[str, Any]
) -> None:
    for key, v in options.items():
        if isinstance(v, str) and v.startswith("@"):
            m = REFERENCE_RE.match(v)
            if m is None:
                raise c.fail(
                    f"{field}.{key}",
                    f"expected a reference '@calibration.<name>.sigma' or "
                    f"'@calibration.<name>.alpha' (optionally scaled: '...sigma*0.5'), got {v!r}",
                )
            if m.group(1) not in calibration:
                raise PipelineNameError(
                    c.file,
                    f"{field}.{key}",
                    m.group(1),
                    calibration,
                    "calibration (a [calibration.<name>] table)",
                )


def _explain(c: _Checker, value: Any, calibration: Mapping[str, Any]) -> ExplainConfig:
    from wrapgrad.wrapping import build_explainer

    f = "[explain]"
    t = c.table(value, f, FIELDS["explain"])
    methods_raw = c.get(t, f, "methods", list)
    if not methods_raw:
        raise c.fail(f"{f}.methods", "expected at least one method name, got an empty list")
    methods = tuple(c.name("explainer", m, f"{f}.methods[{i}]") for i, m in enumerate(methods_raw))
    if len(set(methods)) != len(methods):
        raise c.fail(f"{f}.methods", f"expected distinct methods, got {methods_raw!r}")
    method_options = c.data_value(c.get(t, f, "method_options", dict, {}), f"{f}.method_options")
    for m, opts in method_options.items():
        where = f"{f}.method_options.{m}"
        if m not in methods:
            raise PipelineNameError(c.file, where, m, methods, "method of [explain].methods")
        c.table(opts, where, None)
        _check_references(c, opts, where, calibration)
        plain = {
            k: as_option(v)
            for k, v in opts.items()
            if not (isinstance(v, str) and v.startswith("@"))
        }
        layer, interpolate = plain.pop("layer", None), plain.pop("interpolate", False)
        try:
            build_explainer(
                m, layer=layer, interpolate=interpolate, options=plain, registry=c.registry
            )
        except UnknownNameError as exc:
            raise PipelineNameError(
                c.file, f"{where}.{exc.name}", exc.name, exc.known, f"option of {m}"
            ) from None
    enh_raw = c.get(t, f, "enhancers", list, [{"label": "Baseline"}])
    if not enh_raw:
        raise c.fail(f"{f}.enhancers", "expected at least one enhancer table, got an empty list")
    enhancers = []
    for i, e in enumerate(enh_raw):
        where = f"{f}.enhancers[{i}]"
        et = c.table(e, where, FIELDS["explain.enhancers"])
        ename = c.get(et, where, "name", str, None)
        if ename is not None and ename.lower() in _NO_ENHANCER:
            ename = None
        factory = None
        if ename is not None:
            ename = c.name("enhancer", ename, f"{where}.name")
            factory = c.registry.get("enhancer", ename).factory
        label = c.get(et, where, "label", str, ename or "Baseline")
        options = c.data_value(c.get(et, where, "options", dict, {}), f"{where}.options")
        if ename is None and options:
            raise c.fail(
                f"{where}.options", "expected no options for the plain method (no enhancer name)"
            )
        if factory is not None:
            c.options_for(factory, options, f"{where}.options", f"enhancer {ename}")
        _check_references(c, options, f"{where}.options", calibration)
        enhancers.append(EnhancerConfig(label=label, name=ename, options=options))
    for m, opts in method_options.items():
        for e in enhancers:
            both = sorted(set(opts) & set(e.options))
            if both:
                raise c.fail(
                    f"[explain].method_options.{m}.{both[0]}",
                    f"expected an option name the enhancer {e.label!r} does not also take "
                    f"(wrap() would give {both[0]!r} to the enhancer); drop one of them",
                )
    labels = [e.label for e in enhancers]
    if len(set(labels)) != len(labels):
        raise c.fail(f"{f}.enhancers", f"expected distinct labels, got {labels!r}")
    return ExplainConfig(
        methods=methods,
        enhancers=tuple(enhancers),
        method_options=method_options,
        absolute=c.get(t, f, "absolute", bool, True),
        batch_size=c.positive(t, f, "batch_size", 32),
    )


def _evaluate(
    c: _Checker, value: Any, data: DataConfig, explain: ExplainConfig
) -> tuple[tuple[MetricConfig, ...], tuple[AttackConfig, ...]]:
    t = c.table(value, "[evaluate]", FIELDS["evaluate"])
    has_masks = bool(getattr(c.registry.get("dataset", data.dataset), "has_masks", False))
    labels = [e.label for e in explain.enhancers]
    metrics = []
    for i, m in enumerate(c.get(t, "[evaluate]", "metrics", list, [])):
        f = f"[evaluate].metrics[{i}]"
        mt = c.table(m, f, FIELDS["evaluate.metrics"])
        if ("name" in mt) == ("quantus" in mt):
            raise c.fail(
                f,
                "expected exactly one of 'name' (a wrapgrad metric) or 'quantus' (a Quantus metric class)",
            )
        params = c.data_value(c.get(mt, f, "params", dict, {}), f"{f}.params")
        masks = c.get(mt, f, "masks", list, [])
        declared = tuple(getattr(c.registry.get("dataset", data.dataset), "masks", ()) or ())
        for j, mk in enumerate(masks):
            if not isinstance(mk, str):
                raise c.fail(
                    f"{f}.masks[{j}]", f"expected a mask name (a string), got {_describe(mk)}"
                )
            if declared and mk not in declared:
                # Known from the data set's registry record: refused before any data is built.
                raise c.fail(
                    f"{f}.masks[{j}]",
                    f"expected one of the data set's masks {list(declared)}, got {mk!r}"
                    + (
                        f"; did you mean {closest(mk, declared)[0]!r}?"
                        if closest(mk, declared)
                        else ""
                    ),
                )
        against = c.get(mt, f, "against", str, None)
        hib = c.get(mt, f, "higher_is_better", bool, None)
        if "quantus" in mt:
            cls = _quantus_metric(c, mt["quantus"], f"{f}.quantus")
            c.options_for(cls.__init__, params, f"{f}.params", f"Quantus {cls.__name__}")
            source, name = "quantus", cls.__name__
            requires = (
                "mask" if cls.__module__.startswith("quantus.metrics.localisation") else "model"
            )
            if hib is None:
                hib = _quantus_direction(cls)
        else:
            name = c.name("metric", mt["name"], f"{f}.name")
            spec = c.registry.get("metric", name)
            c.options_for(spec.factory, params, f"{f}.params", f"metric {name}")
            source, requires = "wrapgrad", spec.requires
            if hib is None:
                hib = spec.higher_is_better
        if requires == "mask":
            if not masks:
                raise c.fail(
                    f"{f}.masks",
                    f'missing; {name} compares maps with ground-truth masks: expected a list of mask names (e.g. ["digit", "square"])',
                )
            if not has_masks:
                raise c.fail(
                    f"{f}.masks", f"the data set {data.dataset!r} has no ground-truth masks"
                )
        elif masks:
            raise c.fail(f"{f}.masks", f"expected no masks: {name} does not use ground-truth masks")
        if requires == "maps":
            if against is None:
                raise c.fail(
                    f"{f}.against",
                    f"missing; {name} compares two maps: expected the label of the enhancer to compare with, one of {labels}",
                )
            if against not in labels:
                raise PipelineNameError(c.file, f"{f}.against", against, labels, "enhancer label")
        elif against is not None:
            raise c.fail(f"{f}.against", f"expected no 'against': {name} does not compare two maps")
        label = c.get(mt, f, "label", str, name)
        metrics.append(
            MetricConfig(
                label=label,
                source=source,
                name=name,
                params=params,
                masks=tuple(masks),
                against=against,
                higher_is_better=hib,
                requires=requires,
                samples=c.positive(mt, f, "samples", None),
            )
        )
    keys = [m.label for m in metrics]
    if len(set(keys)) != len(keys):
        raise c.fail("[evaluate].metrics", f"expected distinct labels, got {keys!r}")
    attacks = []
    for i, a in enumerate(c.get(t, "[evaluate]", "attacks", list, [])):
        f = f"[evaluate].attacks[{i}]"
        at = c.table(a, f, FIELDS["evaluate.attacks"])
        name = c.name("attack", c.get(at, f, "name", str), f"{f}.name")
        params = c.data_value(c.get(at, f, "params", dict, {}), f"{f}.params")
        c.options_for(
            c.registry.get("attack", name).factory, params, f"{f}.params", f"attack {name}"
        )
        scores = c.get(at, f, "scores", list, list(ATTACK_SCORES))
        known_scores = tuple(
            getattr(c.registry.get("attack", name).factory, "scores", ATTACK_SCORES)
        )
        for j, s in enumerate(scores):
            if not isinstance(s, str):
                raise c.fail(
                    f"{f}.scores[{j}]", f"expected a score name (a string), got {_describe(s)}"
                )
            if s not in known_scores:
                raise PipelineNameError(
                    c.file, f"{f}.scores[{j}]", s, known_scores, f"score of attack {name}"
                )
        attacks.append(
            AttackConfig(
                label=c.get(at, f, "label", str, name),
                name=name,
                params=params,
                samples=c.positive(at, f, "samples", 32),
                scores=tuple(scores),
            )
        )
    return tuple(metrics), tuple(attacks)


def _quantus_direction(cls: type) -> bool | None:
    """Whether a higher score of a Quantus metric is better (its ``score_direction``)."""
    direction = str(getattr(cls, "score_direction", "")).upper()
    if direction.endswith("HIGHER"):
        return True
    if direction.endswith("LOWER"):
        return False
    return None


def _report(
    c: _Checker,
    value: Any,
    explain: ExplainConfig,
    metrics: tuple[MetricConfig, ...],
    attacks: tuple[AttackConfig, ...],
) -> ReportConfig:
    f = "[report]"
    t = c.table(value, f, FIELDS["report"])
    paths = {}
    for key, default in (
        ("markdown", "report.md"),
        ("json", "results.json"),
        ("figures", "figures"),
    ):
        paths[key] = check_output_path(c.get(t, f, key, str, default), c.file, f"{f}.{key}")
    normal = {k: _normal_parts(p) for k, p in paths.items()}
    for (k1, p1), (k2, p2) in itertools.combinations(normal.items(), 2):
        if p1[: len(p2)] == p2 or p2[: len(p1)] == p1:  # equal, or one inside the other
            raise c.fail(
                f"{f}.{k2}",
                f"expected a path distinct from (and not inside) {f}.{k1} = {paths[k1]!r}, "
                f"got {paths[k2]!r}",
            )
    labels = [e.label for e in explain.enhancers]
    metric_names = (
        [m.label for m in metrics]
        + [f"{m.label}[{mk}]" for m in metrics for mk in m.masks]
        + [f"{a.label}:{s}" for a in attacks for s in a.scores]
    )
    expect = []
    for i, e in enumerate(c.get(t, f, "expect", list, [])):
        where = f"{f}.expect[{i}]"
        et = c.table(e, where, FIELDS["report.expect"])
        metric = c.get(et, where, "metric", str)
        if metric not in metric_names:
            raise PipelineNameError(c.file, f"{where}.metric", metric, metric_names, "metric label")
        undirected = [m.label for m in metrics if m.higher_is_better is None]
        if metric.split("[", 1)[0] in undirected:
            raise c.fail(
                f"{where}.metric",
                f"expected a metric whose direction is known, got {metric!r}: set "
                f"higher_is_better = true or false in its [[evaluate.metrics]] table",
            )
        order = c.get(et, where, "order", list, [])
        best = c.get(et, where, "best", str, None)
        if not order and best is None:
            raise c.fail(
                where, "expected 'order' (enhancer labels, worst to best) or 'best' (one label)"
            )
        for j, lab in enumerate([*order, *([best] if best else [])]):
            if lab not in labels:
                field = f"{where}.order[{j}]" if j < len(order) else f"{where}.best"
                raise PipelineNameError(c.file, field, str(lab), labels, "enhancer label")
        expect.append(
            Expectation(
                metric=metric,
                order=tuple(order),
                best=best,
                alpha=c.get(
                    et,
                    where,
                    "alpha",
                    float,
                    0.05,
                    check=lambda v: None if 0 < v < 1 else "a level in (0, 1)",
                ),
            )
        )
    return ReportConfig(
        markdown=paths["markdown"],
        json=paths["json"],
        figures=paths["figures"],
        make_figures=c.get(t, f, "make_figures", bool, True),
        grid_samples=c.positive(t, f, "grid_samples", 4),
        expect=tuple(expect),
        expect_source=c.get(t, f, "expect_source", str, ""),
    )
