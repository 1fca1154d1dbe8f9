"""Pipelines: a declared composition of data, model, calibration, explanations, metrics and attacks.

A pipeline file (TOML, see :mod:`wrapgrad.pipeline_schema` and ``docs/pipeline-reference.md``) is
validated as a whole before anything runs; :meth:`Pipeline.run` then goes through the stages

    data -> model (trained with its recipe, or loaded from the cache) -> calibrate
    -> explain (methods x enhancers) -> evaluate (metrics, attacks) -> report

and writes ``results.json``, ``report.md`` and PNG figures into the output directory (each file
atomically, never outside it). Example::

    import wrapgrad
    run = wrapgrad.Pipeline.from_file("examples/noisegrad_cmnist.toml").run("runs/cmnist")
    print(run.report_path.read_text())

Or in code, from the same tables as a dict::

    pipe = wrapgrad.Pipeline.from_dict({
        "pipeline": {"name": "demo"},
        "data": {"dataset": "digits8x8", "samples": 16},
        "model": {"name": "small_cnn"},
        "explain": {"methods": ["saliency"], "enhancers": [{"label": "Baseline"},
                    {"label": "SG", "name": "smoothgrad", "options": {"n_samples": 8}}]},
        "evaluate": {"metrics": [{"label": "sparseness", "quantus": "Sparseness"}]},
    })
    pipe.run("runs/demo", smoke=True)
"""

from __future__ import annotations

import hashlib
import inspect
import json
import platform
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor, nn

from wrapgrad.errors import WrapgradTypeError, WrapgradValueError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as a package
    import tomli as tomllib  # type: ignore[no-redef]
from wrapgrad.pipeline_schema import (
    REFERENCE_RE,
    MetricConfig,
    PipelineConfig,
    PipelineError,
    as_option,
    validate,
)
from wrapgrad.registry import Registry, get_registry
from wrapgrad.report import (
    RESULTS_FORMAT,
    atomic_write,
    bar_charts,
    grid_figure,
    render_markdown,
    results_to_json,
)

__all__ = ["Pipeline", "PipelineRun", "shrink"]

#: Sizes ``--smoke`` caps (option name -> largest value kept).
SMOKE_CAPS: dict[str, int] = {
    "n_samples": 2,
    "n_models": 2,
    "n_steps": 4,
    "nr_samples": 2,
    "nr_runs": 2,
    "subset_size": 16,
    "draws": 2,
    "steps": 2,
    "restarts": 1,
    "max_iter": 6,
}
SMOKE_SAMPLES = 6
SMOKE_CALIBRATION_SAMPLES = 64
SMOKE_ATTACK_SAMPLES = 4
SMOKE_TRAIN = {"epochs": 1, "limit": 256}
#: Noise levels a smoke run uses where calibrating its barely trained model fails.
SMOKE_LEVELS = {"sigma": 0.1, "alpha": 0.1}


def _cap(options: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(options)
    for key, cap in SMOKE_CAPS.items():
        if isinstance(out.get(key), int) and not isinstance(out[key], bool):
            out[key] = min(out[key], cap)
    return out


def shrink(config: PipelineConfig) -> PipelineConfig:
    """The ``--smoke`` version of a pipeline: tiny training, few samples and Monte-Carlo draws."""
    recipe = dict(config.model.recipe)
    recipe["epochs"] = SMOKE_TRAIN["epochs"]
    recipe["dataset_options"] = {
        **dict(recipe.get("dataset_options", {})),
        "limit": SMOKE_TRAIN["limit"],
    }
    explain = attrs.evolve(
        config.explain,
        enhancers=tuple(attrs.evolve(e, options=_cap(e.options)) for e in config.explain.enhancers),
        method_options={m: _cap(o) for m, o in config.explain.method_options.items()},
    )
    calibration = {
        k: attrs.evolve(
            c,
            samples=min(c.samples, SMOKE_CALIBRATION_SAMPLES),
            # A one-epoch model is near chance level, where AD (relative to 1/classes) is
            # undefined; smoke runs measure the drop relative to zero accuracy instead (and fall
            # back to SMOKE_LEVELS where even that finds no level, see _Runner._calibrate).
            options=_cap({"draws": 2, "max_iter": 6, "chance": 0.0, **c.options}),
        )
        for k, c in config.calibration.items()
    }
    return attrs.evolve(
        config,
        data=attrs.evolve(config.data, samples=min(config.data.samples, SMOKE_SAMPLES)),
        model=attrs.evolve(config.model, recipe=recipe),
        calibration=calibration,
        explain=explain,
        metrics=tuple(
            attrs.evolve(
                m,
                params=_cap(m.params),
                samples=None if m.samples is None else min(m.samples, SMOKE_SAMPLES),
            )
            for m in config.metrics
        ),
        attacks=tuple(
            attrs.evolve(a, params=_cap(a.params), samples=min(a.samples, SMOKE_ATTACK_SAMPLES))
            for a in config.attacks
        ),
        report=attrs.evolve(config.report, grid_samples=min(config.report.grid_samples, 2)),
    )


@attrs.frozen(kw_only=True)
class PipelineRun:
    """What :meth:`Pipeline.run` wrote."""

    out_dir: Path
    results: dict[str, Any]
    results_path: Path
    report_path: Path
    figure_paths: tuple[Path, ...] = ()


def _inside(root: Path, relative: str) -> Path:
    """``root / relative``, refusing a result outside ``root`` (symbolic links included)."""
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise WrapgradValueError(
            f"path: expected a path inside the output directory {str(root)!r}, got {relative!r}"
        )
    return target


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    import wrapgrad

    out = {"wrapgrad": wrapgrad.__version__, "python": platform.python_version()}
    for dist in ("torch", "captum", "quantus", "numpy", "scipy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:  # pragma: no cover
            out[dist] = "not installed"
    return out


class Pipeline:
    """A validated pipeline; build it with :meth:`from_file`, :meth:`from_toml` or
    :meth:`from_dict`, run it with :meth:`run`.

    Attributes:
        config: the validated :class:`~wrapgrad.pipeline_schema.PipelineConfig`.
        text: the source the pipeline came from (TOML text, or JSON for :meth:`from_dict`).
        path: the pipeline file, if any (relative ``[model].weights`` paths start there).
    """

    def __init__(self, config: PipelineConfig, text: str = "", path: Path | None = None) -> None:
        if not isinstance(config, PipelineConfig):
            raise WrapgradTypeError(
                f"config: expected a PipelineConfig (use Pipeline.from_file or from_dict), got "
                f"{type(config).__name__}"
            )
        self.config = config
        self.text = text
        self.path = path

    @classmethod
    def from_file(cls, path: str | Path, *, registry: Registry | None = None) -> Pipeline:
        """Read and validate a TOML pipeline file (errors name the file and the field)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise WrapgradValueError(
                f"path: cannot read pipeline file {str(path)!r}: {exc}"
            ) from None
        return cls.from_toml(text, file=str(path), registry=registry, path=path)

    @classmethod
    def from_toml(
        cls,
        text: str,
        *,
        file: str = "<string>",
        registry: Registry | None = None,
        path: Path | None = None,
    ) -> Pipeline:
        """Parse and validate TOML text."""
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PipelineError(file, "file", f"expected valid TOML: {exc}") from None
        return cls(validate(raw, file, registry=registry), text=text, path=path)

    @classmethod
    def from_dict(
        cls, tables: Mapping[str, Any], *, file: str = "<dict>", registry: Registry | None = None
    ) -> Pipeline:
        """Validate a pipeline given as the tables of a pipeline file (a dict)."""
        config = validate(tables, file, registry=registry)
        return cls(config, text=json.dumps(tables, indent=1, sort_keys=True, default=str))

    def smoke(self) -> Pipeline:
        """A copy with every size shrunk (what ``wrapgrad run --smoke`` runs)."""
        return Pipeline(shrink(self.config), self.text, self.path)

    def __repr__(self) -> str:
        return f"Pipeline({self.config.name!r}, file={self.config.file!r})"

    def run(
        self,
        out_dir: str | Path,
        *,
        smoke: bool = False,
        progress: bool = True,
        registry: Registry | None = None,
    ) -> PipelineRun:
        """Run every stage and write the report into ``out_dir`` (created if needed).

        Args:
            out_dir: the output directory; every file goes inside it.
            smoke: shrink every size first (CI).
            progress: show tqdm progress bars.
            registry: the plugin registry (default: the process-wide one).

        Returns:
            A :class:`PipelineRun` with the results dict and the written paths.
        """
        config = shrink(self.config) if smoke else self.config
        return _Runner(
            self, config, Path(out_dir), smoke, progress, registry or get_registry()
        ).run()


class _Clock:
    """Seconds spent per stage."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.last = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.times[stage] = round(now - self.last, 3)
        self.last = now


class _Runner:
    def __init__(
        self,
        pipeline: Pipeline,
        config: PipelineConfig,
        out_dir: Path,
        smoke: bool,
        progress: bool,
        registry: Registry,
    ) -> None:
        self.pipeline = pipeline
        self.c = config
        self.out = out_dir
        self.smoke = smoke
        self.progress = progress
        self.reg = registry
        self.levels: dict[str, dict[str, float | None]] = {}
        self.errors: list[dict[str, str]] = []

    # -- stages ------------------------------------------------------------------------------
    def run(self) -> PipelineRun:
        c = self.c
        start = time.perf_counter()
        for rel in (c.report.markdown, c.report.json, c.report.figures):
            _inside(self.out, rel)  # refuse before any work
        self.out.mkdir(parents=True, exist_ok=True)
        torch_state = torch.random.get_rng_state()
        try:
            torch.manual_seed(c.seed)
            with warnings.catch_warnings():
                # Captum says so for every batch; the inputs are the pipeline's own copies.
                warnings.filterwarnings(
                    "ignore", message=r"Input Tensor \d+ did not already require"
                )
                results = self._stages()
        finally:
            torch.random.set_rng_state(torch_state)
        results["duration_s"] = time.perf_counter() - start
        return self._write(results)

    def _stages(self) -> dict[str, Any]:
        c = self.c
        clock = _Clock()
        data = self._data()
        self._check_masks(data)  # before training: the data set's mask names are known now
        clock("data")
        model, model_info = self._model(data)
        clock("model")
        calibration = self._calibrate(model, data)
        clock("calibration")
        n = min(c.data.samples, len(data))
        x, y = data.inputs[:n], data.labels[:n]
        masks = {k: v[:n] for k, v in getattr(data, "masks", {}).items()}
        self.maps, explains = self._explain(model, x, y)
        clock("explain")
        scores: dict[str, dict[str, dict[str, list[float]]]] = {
            m: {e.label: {} for e in c.explain.enhancers} for m in c.explain.methods
        }
        metric_rows = self._metrics(model, x, y, masks, explains, scores)
        clock("metrics")
        attacks = self._attacks(model, x, y, explains, scores, metric_rows)
        clock("attacks")
        self._grid = (x, masks)
        return {
            "format": RESULTS_FORMAT,
            "name": c.name,
            "description": c.description,
            "smoke": self.smoke,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "pipeline": {
                "file": c.file,
                "text": self.pipeline.text,
                "sha256": hashlib.sha256(self.pipeline.text.encode("utf-8")).hexdigest(),
            },
            "versions": _versions(),
            "seeds": {
                "pipeline": c.seed,
                "data": c.data.seed,
                "model": c.model.seed,
                **{
                    f"calibration.{k}": v.options.get("seed", c.seed)
                    for k, v in c.calibration.items()
                },
            },
            "data": {
                "dataset": c.data.dataset,
                "split": c.data.split,
                "samples": n,
                "seed": c.data.seed,
                "options": dict(c.data.options),
                "labels": y.tolist(),
            },
            "model": model_info,
            "calibration": calibration,
            "methods": list(c.explain.methods),
            "enhancers": [e.label for e in c.explain.enhancers],
            "enhancer_settings": {
                e.label: {"name": e.name, "options": self._resolve(e.options)}
                for e in c.explain.enhancers
            },
            "metrics": metric_rows,
            "scores": scores,
            "attacks": attacks,
            "expectations": [attrs.asdict(e) for e in c.report.expect],
            "expectations_source": c.report.expect_source,
            "figures": [],
            "timings_s": clock.times,
            "metric_timings_s": self.metric_seconds,
            "errors": self.errors,
        }

    def _data(self) -> Any:
        spec = self.reg.get("dataset", self.c.data.dataset)
        return spec.factory(split=self.c.data.split, seed=self.c.data.seed, **self.c.data.options)

    def _check_masks(self, data: Any) -> None:
        known = sorted(getattr(data, "masks", {}) or {})
        for i, m in enumerate(self.c.metrics):
            for j, mask in enumerate(m.masks):
                if mask not in known:
                    raise PipelineError(
                        self.c.file,
                        f"[evaluate].metrics[{i}].masks[{j}]",
                        f"expected one of the data set's masks {known}, got {mask!r}",
                    )

    def _model(self, data: Any) -> tuple[nn.Module, dict[str, Any]]:
        c = self.c.model
        info: dict[str, Any] = {"name": c.name, "seed": c.seed, "recipe": dict(c.recipe)}
        if c.weights is not None:
            base = self.pipeline.path.parent if self.pipeline.path else Path.cwd()
            path = (base / c.weights).resolve()
            in_ch, classes = int(data.inputs.shape[1]), int(data.num_classes)
            model = self.reg.get("model", c.name).factory(in_channels=in_ch, num_classes=classes)
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                model.load_state_dict(state, strict=True)
            except Exception as exc:
                raise WrapgradValueError(
                    f"{self.c.file}: [model].weights: cannot load a state dict from {str(path)!r}: {exc}"
                ) from None
            info["source"] = f"weights {c.weights}"
        else:
            from wrapgrad.catalog import pretrained

            recipe = dict(c.recipe)
            model = pretrained(
                c.name, self.c.data.dataset, seed=c.seed, progress=self.progress, **recipe
            )
            info["source"] = "recipe-trained, cached"
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(xb).argmax(1) for xb in data.inputs.split(256)])
        info["test_accuracy"] = float((pred == data.labels).float().mean())
        info["accuracy_on"] = f"{self.c.data.dataset} {self.c.data.split} ({len(data)} items)"
        return model, info

    def _calibrate(self, model: nn.Module, data: Any) -> dict[str, Any]:
        from wrapgrad.calibration import calibrate

        out = {}
        n_eval = min(self.c.data.samples, len(data))
        for name, cal in self.c.calibration.items():
            # Held out from the evaluated samples where the split is big enough.
            lo = n_eval if len(data) - n_eval >= cal.samples else 0
            inputs = data.inputs[lo : lo + cal.samples]
            labels = data.labels[lo : lo + cal.samples]
            options = {"progress": self.progress, **cal.options}
            try:
                record = calibrate(
                    model,
                    (inputs, labels),
                    perturber=cal.perturber,
                    target_drop=cal.target_drop,
                    calibrator=cal.calibrator,
                    **options,
                )
            except WrapgradValueError as exc:
                if not self.smoke:
                    raise
                # A smoke run's one-epoch model may be too close to chance to calibrate; the run
                # goes on with fixed levels and says so in the report.
                self.levels[name] = dict(SMOKE_LEVELS)
                out[name] = {
                    "calibrator": cal.calibrator,
                    "perturber": cal.perturber,
                    "target_drop": cal.target_drop,
                    "sigma": SMOKE_LEVELS["sigma"],
                    "alpha": SMOKE_LEVELS["alpha"],
                    "error": f"smoke run: calibration failed ({exc}); fixed levels used",
                }
                continue
            self.levels[name] = {"sigma": record.sigma, "alpha": getattr(record, "alpha", None)}
            out[name] = record.to_dict() if hasattr(record, "to_dict") else dict(vars(record))
            out[name]["held_out"] = [lo, lo + len(labels)]
        return out

    def _resolve(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Options with ``"@calibration.X.sigma"`` references replaced by the calibrated level."""
        out = {}
        for k, v in options.items():
            m = REFERENCE_RE.match(v) if isinstance(v, str) else None
            if m is not None:
                if m.group(1) not in self.levels:  # only before calibration has run
                    out[k] = v
                    continue
                level = self.levels[m.group(1)][m.group(2)]
                if level is None:
                    raise WrapgradValueError(
                        f"{self.c.file}: {k}: {v!r} has no value: calibration {m.group(1)!r} "
                        f"found no {m.group(2)} (use a FusionGrad heuristic such as 'halve')"
                    )
                out[k] = float(level) * (float(m.group(3)) if m.group(3) else 1.0)
            else:
                out[k] = as_option(v)
        return out

    def _explain(
        self, model: nn.Module, x: Tensor, y: Tensor
    ) -> tuple[dict[str, dict[str, Tensor]], dict[str, dict[str, Any]]]:
        from tqdm.auto import tqdm

        from wrapgrad.wrapping import wrap

        c = self.c.explain
        maps: dict[str, dict[str, Tensor]] = {}
        explains: dict[str, dict[str, Any]] = {}
        jobs = [(m, e) for m in c.methods for e in c.enhancers]
        bar = tqdm(jobs, desc="explain", disable=not self.progress, leave=False)
        for method, enh in bar:
            bar.set_postfix_str(f"{method} {enh.label}", refresh=False)
            method_options = self._resolve(c.method_options.get(method, {}))
            options = self._resolve(enh.options)
            if enh.name is not None:
                factory = self.reg.get("enhancer", enh.name).factory
                params = inspect.signature(factory).parameters
                if "seed" in params and "seed" not in options:
                    options["seed"] = self.c.seed
                if "progress" in params and "progress" not in options:
                    options["progress"] = False
            explain = wrap(
                model,
                method,
                enh.name,
                registry=self.reg,
                method_options=method_options,
                enhancer_options=options if enh.name is not None else None,
            )
            chunks = [
                explain(xb, target=yb).detach()
                for xb, yb in zip(x.split(c.batch_size), y.split(c.batch_size), strict=True)
            ]
            out = torch.cat(chunks)
            maps.setdefault(method, {})[enh.label] = out.abs() if c.absolute else out
            explains.setdefault(method, {})[enh.label] = explain
        return maps, explains

    def _metrics(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        masks: Mapping[str, Tensor],
        explains: Mapping[str, Mapping[str, Any]],
        scores: dict[str, dict[str, dict[str, list[float]]]],
    ) -> list[dict[str, Any]]:
        from tqdm.auto import tqdm

        rows: list[dict[str, Any]] = []
        for m in self.c.metrics:
            for mask in m.masks or (None,):
                key = f"{m.label}[{mask}]" if mask else m.label
                rows.append(
                    {
                        "key": key,
                        "label": m.label,
                        "mask": mask,
                        "higher_is_better": m.higher_is_better,
                        "source": f"{m.source}:{m.name}",
                        "params": dict(m.params),
                    }
                )
        jobs = [
            (m, meth, e)
            for m in self.c.metrics
            for meth in self.c.explain.methods
            for e in self.c.explain.enhancers
        ]
        bar = tqdm(jobs, desc="evaluate", disable=not self.progress, leave=False)
        self.metric_seconds: dict[str, float] = {}
        for m, method, enh in bar:
            bar.set_postfix_str(f"{m.label} {method} {enh.label}", refresh=False)
            started = time.perf_counter()
            explain = explains[method][enh.label]
            k = x.shape[0] if m.samples is None else min(m.samples, x.shape[0])
            a = self.maps[method][enh.label][:k]
            for mask in m.masks or (None,):
                key = f"{m.label}[{mask}]" if mask else m.label
                s = masks[mask][:k] if mask else None
                try:
                    if m.source == "quantus":
                        vals = self._quantus(m, model, x[:k], y[:k], a, s, explain)
                    else:
                        vals = self._wrapgrad_metric(m, model, x[:k], y[:k], a, s, explain, method)
                except Exception as exc:  # one degenerate cell must not sink the whole run
                    self.errors.append(
                        {
                            "metric": key,
                            "method": method,
                            "enhancer": enh.label,
                            "error": f"{type(exc).__name__}: {exc}".strip()[:500],
                        }
                    )
                    vals = np.full(k, np.nan)
                scores[method][enh.label][key] = [float(v) for v in vals]
            spent = time.perf_counter() - started
            self.metric_seconds[m.label] = round(self.metric_seconds.get(m.label, 0.0) + spent, 3)
        return rows

    def _quantus(
        self,
        m: MetricConfig,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        a: Tensor,
        s: Tensor | None,
        explain: Any,
    ) -> np.ndarray:
        """A Quantus metric through :func:`wrapgrad.quantus_bridge.quantus_metric`; re-explained
        inputs (robustness metrics) go through the same ``explain``."""
        from wrapgrad.quantus_bridge import quantus_metric

        call: dict[str, Any] = {"a_batch": a, "batch_size": self.c.explain.batch_size}
        if s is not None:
            # Localisation compares pixels with a one-channel mask: relevance per pixel is the
            # attribution summed over channels.
            call["a_batch"] = a.sum(dim=1, keepdim=True) if a.dim() == 4 else a
            call["s_batch"] = s.to(x.dtype).reshape(x.shape[0], 1, *s.shape[-2:])
        params = dict(m.params)
        params.setdefault("return_aggregate", False)  # one score per sample, never a mean
        if self.c.explain.absolute:
            params.setdefault("abs", True)  # also applied to Quantus' re-explanations
        metric = quantus_metric(m.name, **params)
        state = np.random.get_state()
        np.random.seed(self.c.seed)  # Quantus draws its perturbations from numpy's global RNG
        try:
            out = metric(model, x, y, explain, **call)
        finally:
            np.random.set_state(state)
        return torch.as_tensor(np.asarray(out, dtype=np.float64)).reshape(-1).numpy()

    def _wrapgrad_metric(
        self,
        m: MetricConfig,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        a: Tensor,
        s: Tensor | None,
        explain: Any,
        method: str,
    ) -> np.ndarray:
        from wrapgrad.evaluation import metric as build_metric

        metric = build_metric(m.name, registry=self.reg, **m.params)
        if m.requires == "mask":
            out = metric(a, s)
        elif m.requires == "maps":
            out = metric(a, self.maps[method][m.against][: a.shape[0]])
        else:
            out = metric(model, x, y, explain)
        return torch.as_tensor(out).detach().double().reshape(-1).cpu().numpy()

    def _attacks(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        explains: Mapping[str, Mapping[str, Any]],
        scores: dict[str, dict[str, dict[str, list[float]]]],
        metric_rows: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        from tqdm.auto import tqdm

        from wrapgrad.evaluation import attack as build_attack

        out = []
        for a in self.c.attacks:
            record: dict[str, Any] = {
                "label": a.label,
                "name": a.name,
                "params": dict(a.params),
                "runs": {},
            }
            for score in a.scores:
                metric_rows.append(
                    {
                        "key": f"{a.label}:{score}",
                        "label": f"{a.label}:{score}",
                        "mask": None,
                        "higher_is_better": True,
                        "source": f"attack:{a.name}",
                        "params": dict(a.params),
                    }
                )
            n = min(a.samples, len(y))
            jobs = [(meth, e) for meth in self.c.explain.methods for e in self.c.explain.enhancers]
            for method, enh in tqdm(
                jobs, desc=f"attack {a.label}", disable=not self.progress, leave=False
            ):
                params = dict(a.params)
                if "seed" not in params:
                    params["seed"] = self.c.seed
                attack = build_attack(a.name, registry=self.reg, **params)
                result = attack(model, x[:n], y[:n], explains[method][enh.label])
                for score in a.scores:
                    if score not in result.metrics:
                        raise WrapgradValueError(
                            f"{self.c.file}: [evaluate].attacks {a.label!r}.scores: {score!r} is not "
                            f"one of the attack's scores {sorted(result.metrics)}"
                        )
                    vals = torch.as_tensor(result.metrics[score]).double().reshape(-1).tolist()
                    scores[method][enh.label][f"{a.label}:{score}"] = vals
                record["runs"].setdefault(method, {})[enh.label] = {
                    "label_kept": float(result.label_kept.float().mean()),
                    "perturbation": float(result.perturbation_norm().mean()),
                    "objective_before": torch.as_tensor(result.objective_before).double().tolist(),
                    "objective_after": torch.as_tensor(result.objective_after).double().tolist(),
                }
            out.append(record)
        return out

    # -- outputs -----------------------------------------------------------------------------
    def _write(self, results: dict[str, Any]) -> PipelineRun:
        r = self.c.report
        figures: list[Path] = []
        if r.make_figures:
            folder = _inside(self.out, r.figures)
            x, masks = self._grid
            k = min(r.grid_samples, x.shape[0])
            for method in self.c.explain.methods:
                safe = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in method)
                path = grid_figure(
                    folder / f"grid_{safe}.png",
                    x[:k].cpu().numpy(),
                    {name: v[:k].float().cpu().numpy() for name, v in masks.items()},
                    {label: m[:k].cpu().numpy() for label, m in self.maps[method].items()},
                    f"{method}: input, ground truth, maps",
                )
                figures.append(path)
                results["figures"].append(
                    {
                        "title": f"{method}: input, masks and maps",
                        "path": f"{r.figures}/{path.name}",
                    }
                )
            for fig in bar_charts(results, folder):
                figures.append(folder / fig["file"])
                results["figures"].append(
                    {"title": fig["title"], "path": f"{r.figures}/{fig['file']}"}
                )
        text = results_to_json(results)
        # What the report is rendered from is exactly what results.json holds.
        reread = json.loads(text)
        json_path = atomic_write(_inside(self.out, r.json), text)
        md_path = atomic_write(_inside(self.out, r.markdown), render_markdown(reread))
        return PipelineRun(
            out_dir=self.out,
            results=reread,
            results_path=json_path,
            report_path=md_path,
            figure_paths=tuple(figures),
        )
