"""The ``sde_compare`` pipeline step: the paper's comparison over training seeds.

After the evaluate step has scored every (model, enhancer) variant, this step

* pools each kind over its training seeds: a column ``ResNet`` (``ResNet/SG``, ...) whose
  per-sample score is the mean over the seeds, added to the per-method tables (so
  ``[[report.expect]]`` may name it) and to ``scores_by_seed`` (one list per seed);
* computes, per method, enhancer and metric, each kind's mean and 95% interval over seeds and
  samples, and tests the paper's ordering (standard ResNet worse than the Brownian SDE worse
  than the attribution-shaped SDE: higher sensitivity, lower SIC) step by step
  (:mod:`wrapgrad_sde.stats`), beside the paper's numbers (:mod:`wrapgrad_sde.paper`);
* computes the IG saturation diagnostics of the paper's Figs. 3-4 on each model (the registered
  ``ig_saturation`` metric's curve: logit, gradient norm and gradient alignment along the IG
  path) and draws them;
* adds a report section (``results["sections"]``) and ``results["sde_comparison"]``.

It needs ``scores`` and provides ``scores`` (the pooled columns), so the report step runs after
it. The ``[sde]`` step's models carry ``kind`` and ``seed`` in their info, which is how it knows
the groups.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from wrapgrad.checks import check_choice, check_positive_int, check_probability
from wrapgrad_sde.paper import PAPER_SOURCE, paper_values
from wrapgrad_sde.recipes import KINDS, LABELS
from wrapgrad_sde.stats import compare_kinds, mean_interval

__all__ = ["CompareStep", "CompareTable", "pooled_label"]


def _order(instance: Any, attribute: Any, value: tuple[str, ...]) -> None:
    if len(value) < 2 or len(set(value)) != len(value):
        raise ValueError(
            f"{attribute.name}: expected two or more distinct kinds, got {list(value)}"
        )
    for v in value:
        check_choice(v, attribute.name, tuple(KINDS))


def _positive(instance: Any, attribute: Any, value: Any) -> None:
    check_positive_int(value, attribute.name, minimum=2 if "steps" in attribute.name else 1)


def _probability(instance: Any, attribute: Any, value: Any) -> None:
    check_probability(value, attribute.name)


def _field(value: Any, doc: str, validator: Any = None) -> Any:
    return attrs.field(default=value, validator=validator, metadata={"doc": doc})


@attrs.frozen(kw_only=True)
class CompareTable:
    """The paper's comparison of the `[sde]` models: each kind pooled over the training seeds,
    the paper's ordering tested step by step, the paper's numbers beside ours, and the IG
    saturation curves (the paper's Figs. 3-4)."""

    order: tuple[str, ...] = _field(
        ("resnet", "brownian", "shaped"),
        "kinds from expected worst to best (the paper: ResNet, Brownian, shaped), a subset of "
        "`[sde].kinds`",
        _order,
    )
    alpha: float = _field(0.05, "significance level of the ordering tests", _probability)
    smoothgrad: str = _field(
        "SG",
        "the `[explain].enhancers` label that stands for SmoothGrad (the paper's Noise Tunnel, "
        '"IG + NT")',
    )
    sensitivity: str = _field(
        "sensitivity", "the metric label shown beside the paper's Table 1 (sensitivity)"
    )
    sic: str = _field("sic", "the metric label shown beside the paper's Table 2 (SIC)")
    saturation_samples: int = _field(
        32, "evaluated samples whose IG path is examined (saturation curves)", _positive
    )
    saturation_steps: int = _field(32, "points on each IG path", _positive)
    figure: str = _field(
        "figures/ig_saturation.png", "the saturation figure (inside the output directory)"
    )


def pooled_label(kind: str, enhancer: str, n_enhancers: int) -> str:
    """The column of ``kind`` pooled over seeds (``"Shaped"``, ``"Shaped/SG"``)."""
    return LABELS[kind] if n_enhancers == 1 else f"{LABELS[kind]}/{enhancer}"


def _direction(row: Mapping[str, Any]) -> bool | None:
    hib = row.get("higher_is_better")
    return None if hib is None else bool(hib)


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _p(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return "< 0.001" if value < 1e-3 else f"{value:.3f}"


class CompareStep:
    """Pools the kinds over seeds, tests the paper's ordering, draws the saturation curves."""

    def check(self, table: CompareTable, plan: Any) -> CompareTable:
        sde = plan.tables.get("sde")
        if sde is None:
            raise plan.fail(
                "[sde_compare]", "expected an [sde] table: the comparison needs its models"
            )
        for j, kind in enumerate(table.order):
            if kind not in sde.kinds:
                raise plan.unknown(f"[sde_compare].order[{j}]", kind, sde.kinds, "kind of [sde]")
        if table.smoothgrad not in plan.enhancers and table.smoothgrad != "SG":
            raise plan.unknown(
                "[sde_compare].smoothgrad", table.smoothgrad, plan.enhancers, "enhancer label"
            )
        if len(sde.seeds) > 1:
            n = len(plan.enhancers)
            plan.variants += [
                pooled_label(kind, e, n) for kind in sde.kinds for e in plan.enhancers
            ]
        return table

    def shrink(self, table: CompareTable) -> CompareTable:
        return attrs.evolve(
            table,
            saturation_samples=min(table.saturation_samples, 4),
            saturation_steps=min(table.saturation_steps, 4),
        )

    def outputs(self, table: CompareTable) -> tuple[str, ...]:
        return (table.figure,)

    # -- run -----------------------------------------------------------------------------------
    def run(self, table: CompareTable, context: Any) -> None:
        groups, seeds = self._groups(context)
        declared = [str(e.label) for e in context.tables["explain"].enhancers]
        enhancers = [e for e in declared if any(g == e for _, g in groups)]
        metrics = [m for m in context.results.get("metrics", []) if _direction(m) is not None]
        rows = []
        for method in context.scores:
            for e in enhancers:
                for m in metrics:
                    scored = all(
                        m["key"] in context.scores[method][label]
                        for (_, g), by_seed in groups.items()
                        if g == e
                        for label in by_seed.values()
                    )  # a metric may score some methods only ([[evaluate.metrics]].methods)
                    if scored:
                        rows.append(self._row(table, context, groups, seeds, method, e, m))
        if len(seeds) > 1:
            self._pool(context, groups, seeds, enhancers)
        saturation = self._saturation(table, context, seeds)
        comparison = {
            "seeds": seeds,
            "order": [LABELS[k] for k in table.order],
            "alpha": table.alpha,
            "rows": rows,
            "saturation": saturation["summary"],
            "paper": PAPER_SOURCE,
        }
        context.results["sde_comparison"] = comparison
        lines = _section_lines(table, context, comparison, saturation.get("figure"))
        context.results.setdefault("sections", []).append(
            {"title": "The paper's comparison (Jha et al. 2022)", "lines": lines}
        )

    @staticmethod
    def _groups(context: Any) -> tuple[dict[tuple[str, str], dict[int, str]], list[int]]:
        """(kind, enhancer) -> seed -> variant label, and the seeds."""
        groups: dict[tuple[str, str], dict[int, str]] = {}
        for label, variant in context.variants.items():
            info = context.models[variant.model].info
            if "kind" not in info:
                continue  # a model of another step
            groups.setdefault((info["kind"], variant.enhancer), {})[int(info["seed"])] = label
        seeds = sorted({s for by_seed in groups.values() for s in by_seed})
        return groups, seeds

    @staticmethod
    def _matrix(context: Any, method: str, key: str, by_seed: Mapping[int, str], seeds: list[int]):
        return [context.scores[method][by_seed[s]][key] for s in seeds]

    def _row(self, table, context, groups, seeds, method, enhancer, metric) -> dict[str, Any]:
        key, hib = metric["key"], bool(metric["higher_is_better"])
        present = [k for k in table.order if (k, enhancer) in groups]
        kinds = {
            LABELS[k]: mean_interval(self._matrix(context, method, key, groups[k, enhancer], seeds))
            for k in present
        }
        steps = []
        for worse, better in itertools.pairwise(present):
            test = compare_kinds(
                self._matrix(context, method, key, groups[worse, enhancer], seeds),
                self._matrix(context, method, key, groups[better, enhancer], seeds),
                hib,
                table.alpha,
            )
            steps.append({"worse": LABELS[worse], "better": LABELS[better], **test})
        paper_metric = {table.sensitivity: "sensitivity", table.sic: "sic"}.get(metric["label"])
        paper = None
        if paper_metric is not None:
            paper = paper_values(paper_metric, method, enhancer == table.smoothgrad)
        return {
            "method": method,
            "enhancer": enhancer,
            "key": key,
            "label": metric["label"],
            "higher_is_better": hib,
            "kinds": kinds,
            "steps": steps,
            "paper": None if paper is None else {LABELS[k]: v for k, v in paper.items()},
        }

    @staticmethod
    def _pool(context, groups, seeds, enhancers) -> None:
        """The pooled columns: per sample, the mean over the seeds."""
        by_seed_all = context.results.setdefault("scores_by_seed", {})
        n = len(enhancers)
        for method, by_variant in context.scores.items():
            for (kind, e), by_seed in groups.items():
                label = pooled_label(kind, e, n)
                pooled, rows = {}, {}
                for key in by_variant[by_seed[seeds[0]]]:
                    m = np.array(
                        [
                            [np.nan if v is None else v for v in by_variant[by_seed[s]][key]]
                            for s in seeds
                        ],
                        dtype=np.float64,
                    )
                    pooled[key] = [float(v) for v in m.mean(axis=0)]
                    rows[key] = m.tolist()
                by_variant[label] = pooled
                by_seed_all.setdefault(method, {})[label] = rows
        for kind, e in groups:
            label = pooled_label(kind, e, n)
            if label not in context.results["enhancers"]:
                context.results["enhancers"].append(label)
            context.results["variants"][label] = {
                "model": f"{LABELS[kind]} (mean over seeds {', '.join(map(str, seeds))})",
                "enhancer": e,
            }

    @staticmethod
    def _saturation(table: CompareTable, context: Any, seeds: list[int]) -> dict[str, Any]:
        from wrapgrad.registry import get_registry

        metric = (
            get_registry().get("metric", "ig_saturation").factory(n_steps=table.saturation_steps)
        )
        data = context.data
        k = min(table.saturation_samples, int(data.labels.shape[0]))
        x, y = data.inputs[:k], data.labels[:k]
        curves: dict[str, list[Any]] = {}
        for _label, entry in context.models.items():
            kind = entry.info.get("kind")
            if kind in table.order:
                curves.setdefault(kind, []).append(metric.curve(entry.model, x, y))
        summary: dict[str, Any] = {"samples": k, "steps": table.saturation_steps, "kinds": {}}
        for kind, runs in curves.items():
            share = [c.post_saturation_share.tolist() for c in runs]
            summary["kinds"][LABELS[kind]] = {
                "post_saturation_share": mean_interval(share),
                "saturation_alpha": float(
                    np.mean([c.saturation_alpha.mean().item() for c in runs])
                ),
            }
        present = [kd for kd in table.order if kd in curves]
        summary["steps_test"] = [
            {
                "worse": LABELS[a],
                "better": LABELS[b],
                **compare_kinds(
                    [c.post_saturation_share.tolist() for c in curves[a]],
                    [c.post_saturation_share.tolist() for c in curves[b]],
                    False,
                    table.alpha,
                ),
            }
            for a, b in itertools.pairwise(present)
            if len(curves[a]) == len(curves[b])
        ]
        out: dict[str, Any] = {"summary": summary}
        if curves:
            from wrapgrad_sde.figures import saturation_figure

            path = saturation_figure(
                context.output(table.figure), {LABELS[kd]: curves[kd] for kd in present}
            )
            context.figure_paths.append(path)
            out["figure"] = table.figure
        return out


# -- the report section -------------------------------------------------------------------------
def _cell(stats: Mapping[str, Any]) -> str:
    return f"{_num(stats['mean'])} [{_num(stats['low'])}, {_num(stats['high'])}]"


def _verdict(steps: list[dict[str, Any]]) -> str:
    if not steps:
        return "n/a"
    if all(s["significant"] for s in steps):
        return "holds (significant)"
    if any(s["reversed_significant"] for s in steps):
        return "**does not hold** (a step significantly reversed)"
    if all(s["improvement"] > 0 for s in steps):
        return "holds in the means, not significant"
    return "**does not hold** (not significant)"


def _method_name(method: str, enhancer: str, table: CompareTable, n_enhancers: int) -> str:
    names = {
        "integrated_gradients": "IG",
        "saliency": "Saliency",
        "deep_lift": "DeepLIFT",
        "deep_lift_shap": "DeepSHAP",
    }
    base = names.get(method, method)
    if n_enhancers == 1 or enhancer == "Baseline":
        return base
    if enhancer == table.smoothgrad:
        return "SmoothGrad" if method == "saliency" else f"{base} + SG"
    return f"{base} + {enhancer}"


def _section_lines(
    table: CompareTable, context: Any, comparison: Mapping[str, Any], figure: str | None
) -> list[str]:
    seeds = comparison["seeds"]
    sde = context.results.get("sde", {})
    models = sde.get("models", {})
    order = comparison["order"]
    n_enh = len({r["enhancer"] for r in comparison["rows"]}) or 1
    lines = [
        f"Standard ResNet (σ = 0), Brownian neural SDE and attribution-shaped neural SDE "
        f"(σ = {sde.get('sigma')}), each trained at seeds {', '.join(map(str, seeds))} from one "
        f"initialisation per seed with the same batches and budget "
        f"({sde.get('train_items')} training items, preset `{sde.get('preset')}`). Explained: "
        f"{_explained(models)}. Mean over seeds and samples, and the 95% interval of a "
        f"bootstrap over seeds and samples (crossed, 2,000 resamples); with one seed, over "
        f"samples only.",
        "",
        "| model | natural accuracy (mean; per seed) | epochs | training s | of which map refresh s |",
        "|---|---|---|---|---|",
    ]
    for kind in order:
        runs = [m for m in models.values() if m.get("kind_label") == kind]
        if not runs:
            continue
        acc = [r["test_accuracy"] for r in runs]
        lines.append(
            f"| {kind} | {_num(float(np.mean(acc)))} ({', '.join(_num(a) for a in acc)}) "
            f"| {runs[0]['epochs']} | {_num(sum(r['train_seconds'] + r['refresh_seconds'] for r in runs), 1)} "
            f"| {_num(sum(r['refresh_seconds'] for r in runs), 1)} |"
        )
    lines += ["", "The paper gives no accuracy.", ""]
    header = " | ".join(order)
    paper_header = " / ".join(order)
    lines += [
        f"| attribution | metric | {header} | paper ({paper_header}) | paper's ordering here |",
        "|---|---|" + "---|" * len(order) + "---|---|",
    ]
    for r in comparison["rows"]:
        arrow = "↑" if r["higher_is_better"] else "↓"
        cells = " | ".join(_cell(r["kinds"][k]) if k in r["kinds"] else "n/a" for k in order)
        paper = "—"
        if r["paper"]:
            paper = " / ".join(_num(r["paper"].get(k)) for k in order)
        name = _method_name(r["method"], r["enhancer"], table, n_enh)
        lines.append(
            f"| {name} | {r['key']} {arrow} | {cells} | {paper} | {_verdict(r['steps'])} |"
        )
    lines += [
        "",
        f"The paper's ordering: {' < '.join(order)} (better to the right; for ↓ metrics "
        f"{' > '.join(order)} in value). Each step: the mean improvement, the one-sided p of "
        f"the paired bootstrap over seeds and samples and of the Wilcoxon signed-rank test on "
        f"the seed-averaged per-sample differences, and the improvement at each seed; "
        f"significant when both p < {table.alpha} and every seed agrees.",
        "",
    ]
    for r in comparison["rows"]:
        name = _method_name(r["method"], r["enhancer"], table, n_enh)
        parts = []
        for s in r["steps"]:
            per_seed = ", ".join(f"{v:+.3f}" for v in s["per_seed"])
            mark = (
                "significant"
                if s["significant"]
                else ("significantly reversed" if s["reversed_significant"] else "not significant")
            )
            parts.append(
                f"{s['worse']} → {s['better']} {s['improvement']:+.4f} (bootstrap p "
                f"{_p(s['p_bootstrap'])}, Wilcoxon p {_p(s['p_wilcoxon'])}; per seed "
                f"{per_seed}: {mark})"
            )
        lines.append(f"- {name}, {r['key']}: " + "; ".join(parts))
    lines.append("")
    sat = comparison["saturation"]
    if sat.get("kinds"):
        lines += [
            f"IG saturation (the paper's Figs. 3-4) on the first {sat['samples']} samples, "
            f"{sat['steps']} points per path: the share of the path's gradient mass after the "
            f"logit has covered 95% of its change (lower: the saturated part contributes less).",
            "",
            "| model | post-saturation share ↓ | mean saturation α |",
            "|---|---|---|",
        ]
        for kind in order:
            s = sat["kinds"].get(kind)
            if s:
                lines.append(
                    f"| {kind} | {_cell(s['post_saturation_share'])} | {_num(s['saturation_alpha'])} |"
                )
        lines.append("")
        for s in sat.get("steps_test", []):
            lines.append(
                f"- {s['worse']} → {s['better']}: {s['improvement']:+.4f} (bootstrap p "
                f"{_p(s['p_bootstrap'])}, Wilcoxon p {_p(s['p_wilcoxon'])}"
                f"{', significant' if s['significant'] else ''})"
            )
        lines.append("")
    if figure:
        lines += [f"![IG along the path: logit, gradient norm, alignment]({figure})", ""]
    failed = [
        f"{_method_name(r['method'], r['enhancer'], table, n_enh)} {r['key']}"
        for r in comparison["rows"]
        if r["steps"] and not all(s["significant"] for s in r["steps"])
    ]
    lines.append(
        "Where the paper's ordering does not hold significantly: " + "; ".join(failed) + "."
        if failed
        else "The paper's ordering holds significantly in every row."
    )
    lines += ["", f"Paper: {comparison['paper']}."]
    return lines


def _explained(models: Mapping[str, Any]) -> str:
    hows = sorted({m.get("explained", "?") for m in models.values()})
    return "; ".join(hows) or "n/a"
