"""The ``report`` step: figures, ``results.json`` and ``report.md`` (rendered from it)."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Mapping

import attrs

from wrapgrad.checks import check_positive_int, check_probability
from wrapgrad.files import atomic_write
from wrapgrad_pipeline.context import RunContext
from wrapgrad_pipeline.plan import Plan
from wrapgrad_pipeline.report import render_markdown, results_to_json
from wrapgrad_pipeline.schema import check_output_path, checked, normal_parts, setting
from wrapgrad_pipeline.smoke import SIZES

__all__ = ["ExpectTable", "ReportStep", "ReportTable"]


@attrs.frozen(kw_only=True)
class ExpectTable:
    """An expected ranking, judged per method and per mask. The direction
    of each test follows the metric's `higher_is_better` (lower-is-better metrics such as
    robustness test for lower scores); an expectation on a metric whose direction is unknown is
    refused. Confidence intervals are Student-t 95% intervals of the mean; with one finite score
    the interval is n/a."""

    metric: str = setting(
        doc='a metric label (`"localisation"`: every mask) or row (`"localisation[digit]"`, '
        '`"ifia_topk:topk_intersection"`)'
    )
    order: tuple[str, ...] = setting(
        (), doc="variant labels from worst to best; each step must improve the mean"
    )
    best: str | None = setting(None, doc="the label expected to beat every other")
    alpha: float = setting(
        0.05,
        type="number in (0, 1)",
        doc="significance level of the tests (the paired one-sided Wilcoxon signed-rank test "
        "on the seed-averaged scores and, with several enhancer seeds, the paired bootstrap "
        "over seeds and samples; see the report)",
        validator=checked(check_probability),
    )
    methods: tuple[str, ...] = setting(
        (), default_doc="every method", doc="the methods the expectation is judged for"
    )


@attrs.frozen(kw_only=True)
class ReportTable:
    """Output paths must be relative, distinct and not inside one another
    (`markdown = "figures/r.md"` is refused), and stay inside the output directory (`..` that
    leaves it, absolute paths and drive letters are refused when the file is read; an existing
    symbolic link in the output directory that leads out of it is refused before any work).
    Every file is written atomically."""

    markdown: str = setting("report.md", doc="relative path inside the output directory")
    json: str = setting("results.json", doc="relative path inside the output directory")
    figures: str = setting("figures", doc="folder inside the output directory")
    make_figures: bool = setting(True, doc="write the PNG figures")
    grid_samples: int = setting(
        4,
        type="integer ≥ 1",
        doc="samples shown in the grid figure (input, masks, one map per variant)",
        validator=checked(check_positive_int),
    )
    expect_source: str = setting("", doc="where the expectations come from (shown above them)")
    expect: tuple[ExpectTable, ...] = setting(
        (), doc="expected rankings, judged per method and per mask"
    )
    reference: Mapping[str, Mapping[str, float]] = setting(
        factory=dict,
        doc="published numbers shown beside the run's: `{<variant or group label> = {<metric "
        "label or row> = value}}` (e.g. a paper's table)",
    )
    reference_source: str = setting("", doc="where the reference numbers come from")
    deviations: tuple[str, ...] = setting(
        (),
        doc="where the run departs from the protocol it reproduces, each with its reason; "
        "`{path}` or `{path:format}` is replaced by a number of the results "
        "(`{calibration.sg.noise_level:.3f}`, `{model.test_accuracy:.3f}`, "
        "`{sweep.curves.SG.named.paper.drop:.0%}`; n/a where the run has none)",
    )


_PATHS = ("markdown", "json", "figures")


class ReportStep:
    """Writes the figures, ``results.json`` and ``report.md`` into the output directory."""

    def check(self, table: ReportTable, plan: Plan) -> ReportTable:
        paths = {
            k: check_output_path(getattr(table, k), plan.file, f"[report].{k}") for k in _PATHS
        }
        normal = {k: normal_parts(p) for k, p in paths.items()}
        for (k1, p1), (k2, p2) in itertools.combinations(normal.items(), 2):
            if p1[: len(p2)] == p2 or p2[: len(p1)] == p1:  # equal, or one inside the other
                raise plan.fail(
                    f"[report].{k2}",
                    f"expected a path distinct from (and not inside) [report].{k1} = "
                    f"{paths[k1]!r}, got {paths[k2]!r}",
                )
        columns = {c.key: c for c in plan.scores}
        labels = {c.label: c for c in plan.scores}
        for i, e in enumerate(table.expect):
            where = f"[report].expect[{i}]"
            column = columns.get(e.metric) or labels.get(e.metric)
            if column is None:
                raise plan.unknown(f"{where}.metric", e.metric, [*labels, *columns], "metric label")
            if column.higher_is_better is None:
                raise plan.fail(
                    f"{where}.metric",
                    f"expected a metric whose direction is known, got {e.metric!r}: set "
                    f"higher_is_better = true or false in its [[evaluate.metrics]] table",
                )
            if not e.order and e.best is None:
                raise plan.fail(
                    where, "expected 'order' (variant labels, worst to best) or 'best' (one label)"
                )
            named = [*e.order, *([e.best] if e.best else [])]
            known = plan.groups if set(named) <= set(plan.groups) else plan.variants
            for j, label in enumerate(named):
                if label not in known:
                    field = f"{where}.order[{j}]" if j < len(e.order) else f"{where}.best"
                    raise plan.unknown(field, str(label), known, "variant label")
            for j, method in enumerate(e.methods):
                if method not in plan.methods:
                    raise plan.unknown(f"{where}.methods[{j}]", method, plan.methods, "method")
        for label, values in table.reference.items():
            if label not in plan.variants and label not in plan.groups:
                known = [*plan.variants, *plan.groups]
                raise plan.unknown(f"[report].reference.{label}", label, known, "variant label")
            for key in values:
                if key not in columns and key not in labels:
                    where = f"[report].reference.{label}.{key}"
                    raise plan.unknown(where, key, [*labels, *columns], "metric label")
        return table

    def shrink(self, table: ReportTable) -> ReportTable:
        return attrs.evolve(table, grid_samples=min(table.grid_samples, SIZES["grid_samples"]))

    def outputs(self, table: ReportTable) -> tuple[str, ...]:
        return tuple(getattr(table, k) for k in _PATHS)

    def run(self, table: ReportTable, context: RunContext) -> None:
        results = context.results
        models = {label: entry.info for label, entry in context.models.items()}
        if len(models) == 1:
            results["model"] = next(iter(models.values()))
        else:
            results["models"] = models
        results["expectations"] = [attrs.asdict(e) for e in table.expect]
        results["expectations_source"] = table.expect_source
        results["reference"] = {k: dict(v) for k, v in table.reference.items()}
        results["reference_source"] = table.reference_source
        results["deviations"] = list(table.deviations)
        results["figures"] = []
        results.setdefault("errors", [])
        results["duration_s"] = time.perf_counter() - context.started
        if table.make_figures:
            self._figures(table, context)
        text = results_to_json(results)
        # What the report is rendered from is exactly what results.json holds.
        reread = json.loads(text)
        context.results_path = atomic_write(context.output(table.json), text)
        context.report_path = atomic_write(context.output(table.markdown), render_markdown(reread))
        context.written = reread

    @staticmethod
    def _figures(table: ReportTable, context: RunContext) -> None:
        from wrapgrad_pipeline.figures import bar_charts, grid_figure, safe_name, sweep_figure
        from wrapgrad_pipeline.groups import group_bar_charts

        folder = context.output(table.figures)
        data = context.data
        for method, by_variant in context.explanations.items():
            n = min(int(ex.maps.shape[0]) for ex in by_variant.values())
            k = min(table.grid_samples, n)
            path = grid_figure(
                folder / f"grid_{safe_name(method)}.png",
                data.inputs[:k].cpu().numpy(),
                {name: v[:k].float().cpu().numpy() for name, v in data.masks.items()},
                {label: ex.maps[:k].cpu().numpy() for label, ex in by_variant.items()},
                f"{method}: input, ground truth, maps",
            )
            context.figure_paths.append(path)
            context.results["figures"].append(
                {
                    "title": f"{method}: input, masks and maps",
                    "path": f"{table.figures}/{path.name}",
                }
            )
        if "sweep" in context.results:
            path = sweep_figure(folder / "sweep.png", context.results["sweep"])
            context.figure_paths.append(path)
            context.results["figures"].append(
                {"title": "noise-level sweep", "path": f"{table.figures}/{path.name}"}
            )
        for fig in [
            *group_bar_charts(context.results, folder),
            *bar_charts(context.results, folder),
        ]:
            context.figure_paths.append(folder / fig["file"])
            context.results["figures"].append(
                {"title": fig["title"], "path": f"{table.figures}/{fig['file']}"}
            )
