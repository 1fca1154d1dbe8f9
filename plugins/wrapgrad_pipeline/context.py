"""The run context: what the steps of one pipeline run read and add.

Each step's ``run(table, context)`` reads the entries it ``needs`` and adds those it
``provides``. The built-in entries are attributes (``data``, ``models``, ``levels``,
``explanations``, ``scores``); a plugin's own entries live in :attr:`RunContext.shared` under
their name. Several steps may add models (``context.models[label] = ModelEntry(...)``); the
explain step then explains every (model, enhancer) variant and the evaluate step scores each.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from wrapgrad.errors import WrapgradValueError
from wrapgrad_pipeline.plan import PipelineConfig
from wrapgrad_pipeline.schema import PipelineError

__all__ = ["EvalData", "Explanation", "ModelEntry", "RunContext", "Variant"]


@attrs.define(kw_only=True)
class EvalData:
    """The data of a run (the ``"data"`` entry)."""

    dataset: Any
    """The whole split (``.inputs``, ``.labels``, ``.masks``, ``.num_classes``, ``len()``), the
    one the models were trained beside (``[data].split_seed``); calibration draws its held-out
    items from it."""
    inputs: Tensor
    """The evaluated samples: the first ``[data].samples`` items of :attr:`order`."""
    labels: Tensor
    masks: dict[str, Tensor] = attrs.field(factory=dict)
    """Ground-truth masks of the evaluated samples, by name."""
    order: Tensor | None = None
    """Indices into the split in sampling order (``[data].seed``): the evaluated samples are
    its first items, the held-out ones (:meth:`held_out`) the next. None: the split's order."""

    def _order(self) -> Tensor:
        n = len(self.dataset)
        return torch.arange(n) if self.order is None else self.order

    def held_out(self, count: int) -> tuple[Tensor, Tensor, list[int]]:
        """``(inputs, labels, [lo, hi])``: ``count`` items of the split that are not evaluated,
        the next ones in sampling order (positions ``lo:hi`` of :attr:`order`); where the split
        has fewer than ``count`` items beyond the evaluated ones, its first ``count`` instead
        (they then overlap the evaluated samples)."""
        order = self._order()
        n_eval = int(self.inputs.shape[0])
        lo = n_eval if len(order) - n_eval >= count else 0
        idx = order[lo : lo + count]
        return self.dataset.inputs[idx], self.dataset.labels[idx], [lo, lo + len(idx)]


@attrs.define(kw_only=True)
class ModelEntry:
    """One model of a run (an item of the ``"models"`` entry)."""

    label: str
    model: nn.Module
    info: dict[str, Any] = attrs.field(factory=dict)
    """What ``results.json`` says about it (name, seed, source, accuracy, ...)."""


@attrs.frozen
class Variant:
    """A (model, enhancer) pair, reported under ``label``."""

    label: str
    model: str
    enhancer: str


@attrs.define(kw_only=True)
class Explanation:
    """The maps of one method and variant on the evaluated samples."""

    variant: Variant
    explain: Any
    """What :func:`wrapgrad.wrap` returned for :attr:`seed`. The maps of each global batch
    were drawn with that batch's own seed (:meth:`explain_for`), so that they do not depend on
    how the batches are spread over processes; metrics and attacks re-explain a batch with
    :meth:`explain_for`."""
    raw: Tensor
    """The maps as ``explain`` returned them."""
    maps: Tensor
    """The maps evaluated (absolute values when ``[explain].absolute``)."""
    seed: int | None = None
    """The enhancer seed of these maps (None: no enhancer)."""
    replicates: list[Explanation] = attrs.field(factory=list)
    """The same variant at the further enhancer seeds (``[explain].replicates``); empty for a
    variant without an enhancer, whose maps do not depend on a seed."""
    rebuild: Callable[..., Any] | None = attrs.field(default=None, repr=False)
    """``rebuild(**enhancer_options)``: the variant's ``explain`` built again with these
    enhancer options replaced (e.g. ``generator=`` for fresh noise); None without an
    enhancer."""

    def explain_for(self, unit: Any) -> Any:
        """The ``explain`` that computed the maps of global batch ``unit``
        (:class:`wrapgrad.sharding.Unit`): the variant rebuilt with the batch's seed
        ``unit.seed(seed)``; :attr:`explain` itself for a variant without a seed."""
        if self.rebuild is None or self.seed is None:
            return self.explain
        return self.rebuild(seed=unit.seed(self.seed))

    def runs(self) -> list[Explanation]:
        """This explanation and its replicates, in seed order."""
        return [self, *self.replicates]


class RunContext:
    """What the steps of one run share.

    Attributes:
        config: the validated (and for ``--smoke``, shrunk) :class:`PipelineConfig`.
        tables: each step's table by step name (``context.tables["explain"].batch_size``).
        seed: ``[pipeline].seed``.
        smoke: a ``--smoke`` run.
        progress: show progress bars.
        workers: threads that explain the global batches of this process (the ``explain``
            step: :func:`~wrapgrad_pipeline.steps.explain.explain_workers`).
        out_dir: the output directory (:meth:`output` resolves paths inside it).
        source_dir: the pipeline file's folder (relative paths in the file start there).
        data: the ``"data"`` entry (:class:`EvalData`).
        models: the ``"models"`` entry: label -> :class:`ModelEntry`, in order.
        levels: the ``"levels"`` entry: model label -> calibration name -> ``{"sigma": σ_NG,
            "noise_level": α_SG}`` (None for a level it does not set).
        variants: variant label -> :class:`Variant` (set by the explain step).
        explanations: the ``"explanations"`` entry: method -> variant label ->
            :class:`Explanation` (its ``replicates``: the further enhancer seeds).
        scores: the ``"scores"`` entry: method -> variant label -> score key -> per-sample
            scores, averaged over the enhancer seeds (``results.json``'s ``scores``);
            ``scores_by_seed`` holds one per-sample list per seed.
        results: the dict ``results.json`` is written from; each step adds its sections.
        shared: entries of plugins' own steps, by name.
    """

    def __init__(
        self,
        config: PipelineConfig,
        *,
        out_dir: Path,
        source_dir: Path,
        smoke: bool,
        progress: bool,
        workers: int = 1,
    ) -> None:
        self.config = config
        self.workers = workers
        self.tables: Mapping[str, Any] = config.tables
        self.seed = config.seed
        self.smoke = smoke
        self.progress = progress
        self.out_dir = out_dir
        self.source_dir = source_dir
        self._data: EvalData | None = None
        self.models: dict[str, ModelEntry] = {}
        self.levels: dict[str, dict[str, dict[str, float | None]]] = {}
        self.variants: dict[str, Variant] = {}
        self.explanations: dict[str, dict[str, Explanation]] = {}
        self.scores: dict[str, dict[str, dict[str, list[float]]]] = {}
        self.scores_by_seed: dict[str, dict[str, dict[str, list[list[float]]]]] = {}
        self.results: dict[str, Any] = {}
        self.shared: dict[str, Any] = {}
        self.started = 0.0
        """``time.perf_counter()`` when the first step started."""
        self.written: dict[str, Any] | None = None
        self.results_path: Path | None = None
        self.report_path: Path | None = None
        self.figure_paths: list[Path] = []
        """``written`` (the results as ``results.json`` holds them) and the paths: set by the
        step that writes them (the report step)."""

    @property
    def file(self) -> str:
        return self.config.file

    @property
    def data(self) -> EvalData:
        """The ``"data"`` entry (an error before a step added it)."""
        if self._data is None:
            raise WrapgradValueError("data: no data yet; the step that provides 'data' runs first")
        return self._data

    @data.setter
    def data(self, value: EvalData) -> None:
        self._data = value

    def fail(self, field: str, message: str) -> PipelineError:
        """The error to raise for a field of the file, found wrong while running."""
        return PipelineError(self.file, field, message)

    def output(self, relative: str) -> Path:
        """``out_dir / relative``, refusing a result outside ``out_dir`` (symbolic links
        included)."""
        target = (self.out_dir / relative).resolve()
        if not target.is_relative_to(self.out_dir.resolve()):
            raise WrapgradValueError(
                f"path: expected a path inside the output directory {str(self.out_dir)!r}, got "
                f"{relative!r}"
            )
        return target

    def add_model(self, label: str, model: nn.Module, info: Mapping[str, Any]) -> None:
        """Add a model to the ``"models"`` entry (what a step that provides models calls; labels
        are distinct, as its ``check`` declared them with ``plan.add_model``)."""
        if label in self.models:
            raise WrapgradValueError(f"label: expected a model label not used yet, got {label!r}")
        self.models[label] = ModelEntry(label=label, model=model, info=dict(info))

    def has(self, entry: str) -> bool:
        """Whether the entry ``entry`` is there: data loaded, at least one model, or a plugin's
        entry in :attr:`shared` (the other built-in entries may be empty)."""
        if entry == "data":
            return self._data is not None
        if entry == "models":
            return bool(self.models)
        if entry in ("levels", "explanations", "scores"):
            return True
        return entry in self.shared

    def record_error(self, **where: str) -> None:
        """Note a cell that could not be computed (``results.json``'s ``errors``)."""
        self.results.setdefault("errors", []).append(dict(where))
