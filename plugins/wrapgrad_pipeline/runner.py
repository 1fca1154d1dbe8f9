"""Pipelines: a declared composition of data, models, calibration, explanations, metrics and
attacks, run as a sequence of pipeline steps.

A pipeline file (TOML, ``docs/pipeline-reference.md``) is validated as a whole before anything
runs (:func:`wrapgrad_pipeline.plan.validate`); :meth:`Pipeline.run` then runs its steps in
order, the built-in ones being

    data -> model (trained with its recipe, or loaded from the cache) -> calibration
    -> explain (methods x variants) -> evaluate (metrics, attacks) -> report

and writes ``results.json``, ``report.md`` and PNG figures into the output directory (each file
atomically, never outside it). The runner itself knows no step: every step, the built-in ones
included, comes from the ``wrapgrad_pipeline_steps`` hook. Example::

    from wrapgrad_pipeline import Pipeline
    run = Pipeline.from_file("examples/noisegrad_cmnist.toml").run("runs/cmnist")
    print(run.report_path.read_text())

Or in code, from the same tables as a dict::

    pipe = Pipeline.from_dict({
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
import json
import platform
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch

from wrapgrad.checks import check_positive_int
from wrapgrad.distributed import world
from wrapgrad.errors import WrapgradTypeError, WrapgradValueError
from wrapgrad.registry import Registry, use_registry
from wrapgrad_pipeline.context import RunContext
from wrapgrad_pipeline.plan import PipelineConfig, installed_steps, validate
from wrapgrad_pipeline.report import RESULTS_FORMAT
from wrapgrad_pipeline.schema import PipelineError
from wrapgrad_pipeline.sharded import is_sharded, on_main

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as a package
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["Pipeline", "PipelineRun", "shrink", "tomllib"]


def shrink(config: PipelineConfig, *, registry: Registry | None = None) -> PipelineConfig:
    """The ``--smoke`` version of a pipeline: each step's ``shrink`` of its table."""
    with use_registry(registry):
        steps = installed_steps()
        return attrs.evolve(
            config,
            tables={name: steps[name][1].shrink(table) for name, table in config.tables.items()},
        )


@attrs.frozen(kw_only=True)
class PipelineRun:
    """What :meth:`Pipeline.run` wrote."""

    out_dir: Path
    results: dict[str, Any]
    results_path: Path
    report_path: Path
    figure_paths: tuple[Path, ...] = ()
    context: RunContext | None = attrs.field(default=None, repr=False, eq=False)
    """The run's context: its models, data and explanations (``context.explanations[method]
    [variant].maps``), for inspection in Python."""


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
        config: the validated :class:`~wrapgrad_pipeline.plan.PipelineConfig`.
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

    def smoke(self, *, registry: Registry | None = None) -> Pipeline:
        """A copy with every size shrunk (what ``wrapgrad run --smoke`` runs)."""
        return Pipeline(shrink(self.config, registry=registry), self.text, self.path)

    def __repr__(self) -> str:
        return f"Pipeline({self.config.name!r}, file={self.config.file!r})"

    def run(
        self,
        out_dir: str | Path,
        *,
        smoke: bool = False,
        progress: bool = True,
        registry: Registry | None = None,
        workers: int = 1,
    ) -> PipelineRun:
        """Run every step and write the report into ``out_dir`` (created if needed).

        Inside an initialised process group (``torchrun``), the ``explain`` and ``evaluate``
        steps split their global batches over the ranks, the others run once on rank 0, and
        rank 0 writes the same report one process writes (``results.json`` says
        ``world_size``); every rank returns it (:mod:`wrapgrad_pipeline.sharded`,
        ``docs/distributed.md``).

        Args:
            out_dir: the output directory; every file goes inside it.
            smoke: shrink every size first (CI).
            progress: show tqdm progress bars.
            registry: the plugin registry (default: the current one).
            workers: threads that explain this process's global batches, torch's intra-op
                threads divided among them (e.g. 2 on 2 cores: each batch on one core). The
                maps are those of one thread at the workers' thread count. Methods that draw
                from the global RNGs (GradientShap, Lime, ...) and models in training mode
                explain on one thread whatever ``workers`` says.

        Returns:
            A :class:`PipelineRun` with the results dict and the written paths.
        """
        with use_registry(registry):
            config = shrink(self.config) if smoke else self.config
            context = RunContext(
                config,
                out_dir=Path(out_dir),
                source_dir=self.path.parent if self.path else Path.cwd(),
                smoke=smoke,
                progress=progress and world().main,
                workers=check_positive_int(workers, "workers"),
            )
            _run_steps(self, context)
        if context.written is None or context.results_path is None or context.report_path is None:
            raise WrapgradValueError(
                "steps: no step wrote results.json and report.md (the report step is missing)"
            )
        return PipelineRun(
            out_dir=context.out_dir,
            results=context.written,
            results_path=context.results_path,
            report_path=context.report_path,
            figure_paths=tuple(context.figure_paths),
            context=context,
        )


def _run_steps(pipeline: Pipeline, context: RunContext) -> None:
    config = context.config
    steps = installed_steps()
    for name in config.steps:  # every output path inside the output directory, before any work
        for rel in steps[name][1].outputs(config.tables[name]):
            context.output(rel)
    context.out_dir.mkdir(parents=True, exist_ok=True)
    context.started = time.perf_counter()
    context.results.update(
        {
            "format": RESULTS_FORMAT,
            "name": config.name,
            "description": config.pipeline.description,
            "smoke": context.smoke,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "pipeline": {
                "file": config.file,
                "text": pipeline.text,
                "sha256": hashlib.sha256(pipeline.text.encode("utf-8")).hexdigest(),
            },
            "versions": _versions(),
            "seeds": {"pipeline": config.seed},
            "world_size": world().size,
            "timings_s": {},
            "errors": [],
        }
    )
    torch_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(config.seed)
        with warnings.catch_warnings():
            # Captum says so for every batch; the inputs are the pipeline's own copies.
            warnings.filterwarnings("ignore", message=r"Input Tensor \d+ did not already require")
            last = time.perf_counter()
            for name in config.steps:
                spec, step = steps[name]
                if is_sharded(step):  # every rank, each its share of the global batches
                    step.run(config.tables[name], context)
                else:  # once, on rank 0, which then sends its context to every rank
                    on_main(
                        lambda: step.run(config.tables[name], context),  # noqa: B023
                        context,
                        f"step {name!r}",
                    )
                for entry in spec.provides:
                    if not context.has(entry):
                        raise WrapgradValueError(
                            f"{name}: the pipeline step declares that it provides {entry!r} "
                            f"but added none"
                        )
                now = time.perf_counter()
                context.results["timings_s"][name] = round(now - last, 3)
                last = now
    finally:
        torch.random.set_rng_state(torch_state)
