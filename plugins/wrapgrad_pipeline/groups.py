"""Reports over replicated models: a *group* pools the models a step declared as its replicates
(``plan.add_model(label, field, group=...)``; e.g. one training objective at several training
seeds, whose models say ``"group"`` and ``"seed"`` in their info).

For a group with ``R`` models (seeds) and ``n`` scored samples, the per-sample scores of one
method and metric form a matrix ``s[r, i]``, and the statistics are those the report uses for
enhancer seeds (:mod:`wrapgrad_pipeline.stats`), with the training seed in the seed's place:

*Means and intervals.* The reported mean is :math:`\\bar s = \\frac1{Rn}\\sum_{r,i} s_{ri}`; its
95% interval is the percentile interval of a crossed bootstrap over seeds *and* samples
(:func:`~wrapgrad_pipeline.stats.seeded_mean_ci`: every seed's model scores every sample); with
one seed it is the Student-t interval over the samples.

*Expectations* ("Nat < AAT") are judged on the paired differences ``d[r, i]`` of the groups'
models of the same seed ``r`` on the same sample ``i`` (only the seeds every group named has;
:func:`~wrapgrad_pipeline.stats.check_expectation`): a step *held* when the mean difference is
positive, and is *significant* when the one-sided Wilcoxon signed-rank test on the
seed-averaged per-sample differences and the paired bootstrap over seeds and samples both give
p < alpha and the mean difference is positive at every seed (a difference that flips sign
across training seeds is never significant).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wrapgrad_pipeline.stats import BOOTSTRAP, seed_matrix, seeded_mean_ci

__all__ = [
    "expectation_lines",
    "group_bar_charts",
    "group_expectations",
    "group_stats",
    "model_groups",
    "table_lines",
]


# -- groups -----------------------------------------------------------------------------------
def model_groups(results: Mapping[str, Any]) -> dict[str, list[tuple[Any, str]]]:
    """Group label -> ``[(seed, variant label), ...]`` in report order: the variants whose
    model's info names a ``group`` (with ``/<enhancer>`` appended when the run has several
    enhancers). Empty when no model has a group."""
    models = results.get("models") or {}
    variants = results.get("variants") or {}
    enhancers = {v.get("enhancer") for v in variants.values()}
    out: dict[str, list[tuple[Any, str]]] = {}
    for label in results.get("enhancers", []):
        var = variants.get(label, {})
        info = models.get(var.get("model"), {})
        if info.get("group") is None:
            continue
        name = str(info["group"])
        if len(enhancers) > 1:
            name = f"{name}/{var.get('enhancer')}"
        out.setdefault(name, []).append((info.get("seed"), label))
    return out


def _rows(
    results: Mapping[str, Any], method: str, key: str, members: Sequence[str]
) -> list[list[float]]:
    """One per-sample score list per member variant (None as NaN)."""
    by_variant = results.get("scores", {}).get(method, {})
    return [
        [math.nan if x is None else float(x) for x in by_variant.get(v, {}).get(key, [])]
        for v in members
    ]


def group_stats(rows: Sequence[Sequence[float]], confidence: float = 0.95) -> tuple[Any, ...]:
    """``(mean, low, high, n, seeds)`` of a group's per-seed scores (module docstring); ``n``
    counts the samples with a finite score at every seed."""
    if not rows or not rows[0] or len({len(r) for r in rows}) != 1:
        return math.nan, math.nan, math.nan, 0, len(rows)
    return (*seeded_mean_ci(rows, confidence), len(rows))


def _aligned(
    results: Mapping[str, Any], method: str, key: str, labels: Sequence[str]
) -> tuple[dict[str, list[list[float]]], list[Any]]:
    """The groups' per-seed scores on the seeds all of them have, in one seed order."""
    groups = model_groups(results)
    by_seed = {g: dict(groups[g]) for g in labels}
    common = [s for s, _ in groups[labels[0]] if all(s in by_seed[g] for g in labels)]
    return {g: _rows(results, method, key, [by_seed[g][s] for s in common]) for g in labels}, common


def group_expectations(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every expectation that names groups (``[report.expect]`` with group labels), judged per
    method and metric key: ``{"method", "metric", "expect", "seeds", "held", "significant",
    "steps": [...]}`` as :func:`~wrapgrad_pipeline.stats.check_expectation` gives them, with
    ``seeds`` the training seeds compared."""
    from wrapgrad_pipeline.report import expectation_cells, expectation_names, judge

    groups = model_groups(results)
    rows = []
    for exp in results.get("expectations", []):
        named = expectation_names(exp)
        if not named or not set(named) <= set(groups):
            continue
        labels = list(groups) if exp.get("best") else list(dict.fromkeys(named))
        for method, m in expectation_cells(results, exp):
            hib = m.get("higher_is_better")
            by_seed, seeds = _aligned(results, method, m["key"], labels)
            if hib is None or not seeds or any(not r or not r[0] for r in by_seed.values()):
                continue
            scores = {g: np.nanmean(seed_matrix(r), axis=0).tolist() for g, r in by_seed.items()}
            verdict = judge(exp, scores, hib, by_seed)
            rows.append({"method": method, "metric": m, "expect": exp, **verdict, "seeds": seeds})
    return rows


# -- report.md ---------------------------------------------------------------------------------
def _reference(results: Mapping[str, Any], group: str, key: str, label: str) -> Any:
    ref = (results.get("reference") or {}).get(group, {})
    return ref.get(key, ref.get(label))


def table_lines(results: Mapping[str, Any]) -> Iterable[str]:
    """The groups' table per method: mean and 95% interval over samples and seeds of every
    score, the reference values (``[report].reference``) beside them."""
    from wrapgrad_pipeline.report import _num, arrow

    groups = model_groups(results)
    if not groups:
        return
    metrics = list(results.get("metrics", []))
    seeds = sorted({len(members) for members in groups.values()})
    yield (
        f"Each row pools one group's models ({'/'.join(map(str, seeds))} seeds): the mean over "
        f"the scored samples and the seeds, and its 95% interval from a crossed bootstrap over "
        f"seeds and samples ({BOOTSTRAP} resamples of both; Student-t over samples for a single "
        f"seed); n: samples scored per model; the best mean per column in bold."
    )
    yield ""
    referenced = {
        m["key"]
        for m in metrics
        if any(_reference(results, g, m["key"], m["label"]) is not None for g in groups)
    }
    source = results.get("reference_source")
    if referenced:
        yield f"Reference (ref.): {source}" if source else "Reference values: ref."
        yield ""
    for method in results.get("methods", []):
        if len(results.get("methods", [])) > 1:
            yield f"**{method}**"
            yield ""
        stats = {
            (g, m["key"]): group_stats(_rows(results, method, m["key"], [v for _, v in members]))
            for g, members in groups.items()
            for m in metrics
        }
        header, rule = ["group", "seeds"], ["---", "---"]
        for m in metrics:
            n = max((stats[(g, m["key"])][3] for g in groups), default=0)
            header.append(f"{m['key']} {arrow(m.get('higher_is_better'))} (n={n})")
            rule.append("---")
            if m["key"] in referenced:
                header.append("ref.")
                rule.append("---")
        yield "| " + " | ".join(header) + " |"
        yield "|" + "|".join(rule) + "|"
        best = {}
        for m in metrics:
            means = {g: stats[(g, m["key"])][0] for g in groups}
            means = {g: v for g, v in means.items() if math.isfinite(v)}
            if means and m.get("higher_is_better") is not None:
                pick = max if m["higher_is_better"] else min
                best[m["key"]] = pick(means, key=means.__getitem__)
        for g, members in groups.items():
            row = [g, ", ".join(str(s) for s, _ in members)]
            for m in metrics:
                mean, lo, hi, _, _ = stats[(g, m["key"])]
                text = f"{_num(mean, 3)} [{_num(lo, 3)}, {_num(hi, 3)}]"
                row.append(f"**{text}**" if best.get(m["key"]) == g else text)
                if m["key"] in referenced:
                    ref = _reference(results, g, m["key"], m["label"])
                    row.append("—" if ref is None else _num(float(ref), 3))
            yield "| " + " | ".join(row) + " |"
        yield ""


def expectation_lines(results: Mapping[str, Any]) -> Iterable[str]:
    """The expectations that name groups, judged over seeds and samples (module docstring)."""
    from wrapgrad_pipeline.report import _p, verdict_lines

    def detail(row: Mapping[str, Any], step: Mapping[str, Any]) -> str:
        flips = "" if step["consistent"] or not step["improved"] else ", sign differs across seeds"
        per_seed = ", ".join(
            f"seed {seed} {d:+.3f}"
            for seed, d in zip(row["seeds"], step["seed_differences"], strict=False)
        )
        return f"Wilcoxon {_p(step['p'])}, bootstrap {_p(step['p_bootstrap'])}; {per_seed}{flips}"

    intro = (
        "Each step compares the two groups' models of the same training seed on the same "
        "samples. It is significant when the one-sided Wilcoxon signed-rank test on the "
        f"seed-averaged per-sample differences and a paired bootstrap over seeds and samples "
        f"({BOOTSTRAP} resamples) both give p < alpha and the mean difference has the same sign "
        "at every seed. Listed per step: the means, the Wilcoxon p, the bootstrap p and the "
        "mean difference at each seed."
    )
    yield from verdict_lines(results, group_expectations(results), intro, detail, digits=3)


# -- figures -------------------------------------------------------------------------------------
def group_bar_charts(results: Mapping[str, Any], folder: Path) -> list[dict[str, str]]:
    """One bar chart per score: each group's mean and 95% interval (per method), the reference
    value as a black mark where there is one. Written atomically as ``groups_<key>.png``."""
    from wrapgrad_pipeline.figures import _figure, grouped_bars, safe_name, save_metric_chart

    groups = model_groups(results)
    if not groups:
        return []
    methods = list(results.get("methods", []))
    names = list(groups)
    made = []
    for m in results.get("metrics", []):
        fig = _figure(1.6 + 0.9 * len(names) * max(1, len(methods)), 3.4)
        ax = fig.add_subplot(1, 1, 1)
        series = {
            method: [
                group_stats(_rows(results, method, m["key"], [v for _, v in groups[g]]))
                for g in names
            ]
            for method in methods
        }
        xs = grouped_bars(ax, names, series)
        refs = [_reference(results, g, m["key"], m["label"]) for g in names]
        if any(r is not None for r in refs):
            rx = [x for x, r in zip(xs, refs, strict=True) if r is not None]
            ry = [float(r) for r in refs if r is not None]
            ax.scatter(rx, ry, marker="_", s=600, color="black", zorder=3, label="reference")
        path = folder / f"groups_{safe_name(m['key'])}.png"
        made.append(save_metric_chart(fig, ax, m, path, f"{m['key']} by group (mean, 95% CI)"))
    return made
