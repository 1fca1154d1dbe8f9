"""Reports over replicated models: a *group* pools the models a step declared as its replicates
(``plan.add_model(label, field, group=...)``; e.g. one training objective at several training
seeds, whose models say ``"group"`` and ``"seed"`` in their info).

For a group with ``R`` models (seeds) and ``n`` scored samples, the per-sample scores of one
method and metric form a matrix ``s[r, i]``.

*Means and intervals.* The reported mean is :math:`\\bar s = \\frac1{Rn}\\sum_{r,i} s_{ri}`; its
95% interval is the percentile interval of a crossed bootstrap over seeds *and* samples: each of
``B = 2000`` replicates resamples the ``R`` rows and the ``n`` columns with replacement (every
seed's model scores every sample) and recomputes the mean. With one seed it is the Student-t
interval over the samples.

*Expectations* ("Nat < AAT") are judged on the paired differences ``d[r, i]`` of the two groups'
models of the same seed ``r`` on the same sample ``i`` (signed so that positive is an
improvement; only the seeds both groups have). A step *held* when the mean difference is
positive; it is *significant* when all of

* the paired one-sided Wilcoxon signed-rank test on the seed-averaged per-sample differences,
* the paired crossed bootstrap (one-sided p: the share of replicate means at or below zero),
* and the sign of the mean difference at every seed (a difference that flips sign across
  training seeds is never significant)

agree at level ``alpha``. Pairs with a NaN are dropped; the bootstrap is seeded, so a report
rendered again from ``results.json`` is identical. The same statistics as
:mod:`wrapgrad_pipeline.stats` uses for enhancer seeds, applied to training seeds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wrapgrad_pipeline.stats import mean_ci, paired_wilcoxon

__all__ = [
    "BOOTSTRAP",
    "bootstrap_means",
    "compare",
    "expectation_lines",
    "group_bar_charts",
    "group_expectations",
    "group_stats",
    "model_groups",
    "table_lines",
]

#: Bootstrap replicates of the intervals and tests.
BOOTSTRAP = 2000


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


def _matrix(results: Mapping[str, Any], method: str, key: str, members: Sequence[str]) -> Any:
    rows = []
    by_variant = results.get("scores", {}).get(method, {})
    for v in members:
        values = by_variant.get(v, {}).get(key, [])
        rows.append([math.nan if x is None else float(x) for x in values])
    if not rows or len({len(r) for r in rows}) != 1 or not rows[0]:
        return None
    return np.asarray(rows, dtype=np.float64)


def _counts(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    idx = rng.integers(0, n, size=(b, n))
    counts = np.zeros((b, n))
    np.add.at(counts, (np.arange(b)[:, None], idx), 1.0)
    return counts


def bootstrap_means(matrix: np.ndarray, n_boot: int = BOOTSTRAP, seed: int = 0) -> np.ndarray:
    """``(n_boot,)`` means of ``matrix`` ``(R, n)`` with its rows (seeds) and columns (samples)
    resampled with replacement, independently; columns with a NaN are dropped, and one row is
    resampled over the columns only."""
    m = matrix[:, np.all(np.isfinite(matrix), axis=0)]
    r, n = m.shape
    if n == 0:
        return np.full(n_boot, np.nan)
    rng = np.random.default_rng(seed)
    wr = _counts(rng, n_boot, r) if r > 1 else np.ones((n_boot, 1))
    wn = _counts(rng, n_boot, n)
    return np.einsum("br,rn,bn->b", wr, m, wn) / (r * n)


def group_stats(matrix: np.ndarray | None, confidence: float = 0.95) -> tuple[Any, ...]:
    """``(mean, low, high, n, seeds)`` of a group's ``(R, n)`` scores (module docstring); ``n``
    counts the samples scored at every seed."""
    if matrix is None:
        return math.nan, math.nan, math.nan, 0, 0
    if matrix.shape[0] == 1:
        return (*mean_ci(matrix[0].tolist(), confidence), 1)
    finite = matrix[:, np.all(np.isfinite(matrix), axis=0)]
    if finite.shape[1] == 0:
        return math.nan, math.nan, math.nan, 0, matrix.shape[0]
    lo, hi = np.quantile(bootstrap_means(finite), [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(finite.mean()), float(lo), float(hi), int(finite.shape[1]), matrix.shape[0]


def compare(
    worse: np.ndarray, better: np.ndarray, higher_is_better: bool, alpha: float = 0.05
) -> dict[str, Any]:
    """One expected step, ``better`` over ``worse``, from their seed-aligned ``(R, n)`` scores:
    ``{"improved", "mean_difference", "p", "p_bootstrap", "seed_differences", "consistent",
    "significant"}`` (module docstring)."""
    d = (better - worse) if higher_is_better else (worse - better)
    d = d[:, np.all(np.isfinite(d), axis=0)]
    if d.size == 0:
        return {
            "improved": False,
            "mean_difference": math.nan,
            "p": math.nan,
            "p_bootstrap": math.nan,
            "seed_differences": [],
            "consistent": False,
            "significant": False,
        }
    per_seed = d.mean(axis=1)
    averaged = d.mean(axis=0)
    p = paired_wilcoxon(np.zeros_like(averaged), averaged, True)
    boot = bootstrap_means(d)
    p_boot = float((1 + np.sum(boot <= 0)) / (len(boot) + 1))
    improved = bool(d.mean() > 0)
    consistent = bool(np.all(per_seed > 0))
    return {
        "improved": improved,
        "mean_difference": float(d.mean()),
        "p": p,
        "p_bootstrap": p_boot,
        "seed_differences": [float(v) for v in per_seed],
        "consistent": consistent,
        "significant": improved and consistent and p < alpha and p_boot < alpha,
    }


def _aligned(
    results: Mapping[str, Any], method: str, key: str, a: str, b: str
) -> tuple[Any, Any, list[Any]]:
    """The two groups' score matrices on the seeds both have, in the same seed order."""
    groups = model_groups(results)
    seeds_b = dict(groups[b])
    pairs = [(s, va, seeds_b[s]) for s, va in groups[a] if s in seeds_b]
    if not pairs:
        return None, None, []
    return (
        _matrix(results, method, key, [p[1] for p in pairs]),
        _matrix(results, method, key, [p[2] for p in pairs]),
        [p[0] for p in pairs],
    )


def _is_group_expectation(exp: Mapping[str, Any], groups: Mapping[str, Any]) -> bool:
    labels = [*exp.get("order", []), *([exp["best"]] if exp.get("best") else [])]
    return bool(labels) and all(label in groups for label in labels)


def group_expectations(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every expectation that names groups, judged per method and metric key:
    ``{"method", "metric", "expect", "held", "significant", "steps": [...]}``."""
    groups = model_groups(results)
    rows = []
    metrics = list(results.get("metrics", []))
    for exp in results.get("expectations", []):
        if not _is_group_expectation(exp, groups):
            continue
        keys = [m for m in metrics if exp["metric"] in (m["key"], m["label"])]
        order = list(exp.get("order", []))
        pairs = list(itertools.pairwise(order))
        if exp.get("best"):
            pairs += [(g, exp["best"]) for g in groups if g != exp["best"]]
        methods = exp.get("methods") or results.get("methods", [])
        for method in [m for m in results.get("methods", []) if m in methods]:
            for m in keys:
                hib = m.get("higher_is_better")
                if hib is None:
                    continue
                steps = []
                for worse, better in pairs:
                    mw, mb, seeds = _aligned(results, method, m["key"], worse, better)
                    if mw is None or mb is None:
                        continue
                    step = compare(mw, mb, bool(hib), float(exp.get("alpha", 0.05)))
                    steps.append(
                        {
                            "worse": worse,
                            "better": better,
                            "seeds": seeds,
                            "mean_worse": group_stats(mw)[0],
                            "mean_better": group_stats(mb)[0],
                            **step,
                        }
                    )
                if not steps:
                    continue
                held = all(s["improved"] for s in steps)
                rows.append(
                    {
                        "method": method,
                        "metric": m,
                        "expect": exp,
                        "held": held,
                        "significant": held and all(s["significant"] for s in steps),
                        "steps": steps,
                    }
                )
    return rows


# -- report.md ---------------------------------------------------------------------------------
def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _p(p: Any) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return f"{p:.2g}" if p >= 1e-4 else "< 1e-4"


def _arrow(hib: Any) -> str:
    return {True: "↑", False: "↓"}.get(hib, "")


def _reference(results: Mapping[str, Any], group: str, key: str, label: str) -> Any:
    ref = (results.get("reference") or {}).get(group, {})
    return ref.get(key, ref.get(label))


def table_lines(results: Mapping[str, Any]) -> Iterable[str]:
    """The groups' table per method: mean and 95% interval over samples and seeds of every
    score, the reference values (``[report].reference``) beside them."""
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
            (g, m["key"]): group_stats(_matrix(results, method, m["key"], [v for _, v in members]))
            for g, members in groups.items()
            for m in metrics
        }
        header, rule = ["group", "seeds"], ["---", "---"]
        for m in metrics:
            n = max((stats[(g, m["key"])][3] for g in groups), default=0)
            header.append(f"{m['key']} {_arrow(m.get('higher_is_better'))} (n={n})")
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
                text = f"{_num(mean)} [{_num(lo)}, {_num(hi)}]"
                row.append(f"**{text}**" if best.get(m["key"]) == g else text)
                if m["key"] in referenced:
                    ref = _reference(results, g, m["key"], m["label"])
                    row.append("—" if ref is None else _num(float(ref)))
            yield "| " + " | ".join(row) + " |"
        yield ""


def expectation_lines(results: Mapping[str, Any]) -> Iterable[str]:
    """The expectations that name groups, judged over seeds and samples (module docstring)."""
    rows = group_expectations(results)
    if not rows:
        return
    if results.get("expectations_source"):
        yield results["expectations_source"]
        yield ""
    yield (
        "Each step compares the two groups' models of the same training seed on the same "
        "samples. It is significant when the one-sided Wilcoxon signed-rank test on the "
        f"seed-averaged per-sample differences and a paired bootstrap over seeds and samples "
        f"({BOOTSTRAP} resamples) both give p < alpha and the mean difference has the same sign "
        "at every seed. Listed per step: the means, the Wilcoxon p, the bootstrap p and the "
        "mean difference at each seed."
    )
    yield ""
    for r in rows:
        m = r["metric"]
        hib = m.get("higher_is_better") is not False
        if r["significant"]:
            verdict = "**held** (every step significant)"
        elif r["held"]:
            verdict = "**held** in the means (not every step significant)"
        else:
            verdict = "**did not hold**"
        exp = r["expect"]
        what = " < ".join(exp.get("order", [])) or f"best: {exp.get('best')}"
        direction = "" if hib else " (lower is better)"
        yield f"- `{r['method']}`, {m['key']}: {what}{direction}: {verdict}"
        for s in r["steps"]:
            sign = ("<" if hib else ">") if s["improved"] else ("≥" if hib else "≤")
            flips = "" if s["consistent"] or not s["improved"] else ", sign differs across seeds"
            per_seed = ", ".join(
                f"seed {seed} {d:+.3f}"
                for seed, d in zip(s["seeds"], s["seed_differences"], strict=False)
            )
            sig = ""
            if s["improved"]:
                sig = " (significant)" if s["significant"] else " (not significant)"
            yield (
                f"  - {s['worse']} {_num(s['mean_worse'])} {sign} {s['better']} "
                f"{_num(s['mean_better'])}: Wilcoxon p {_p(s['p'])}, bootstrap p "
                f"{_p(s['p_bootstrap'])}; {per_seed}{flips}{sig}"
            )
    yield ""


# -- figures -------------------------------------------------------------------------------------
def group_bar_charts(results: Mapping[str, Any], folder: Path) -> list[dict[str, str]]:
    """One bar chart per score: each group's mean and 95% interval (per method), the reference
    value as a black mark where there is one. Written atomically as ``groups_<key>.png``."""
    from wrapgrad_pipeline.figures import _figure, _save, safe_name

    groups = model_groups(results)
    if not groups:
        return []
    methods = list(results.get("methods", []))
    names = list(groups)
    made = []
    for m in results.get("metrics", []):
        fig = _figure(1.6 + 0.9 * len(names) * max(1, len(methods)), 3.4)
        ax = fig.add_subplot(1, 1, 1)
        width = 0.8 / max(1, len(methods))
        xs = np.arange(len(names))
        for j, method in enumerate(methods):
            stats = [
                group_stats(_matrix(results, method, m["key"], [v for _, v in groups[g]]))
                for g in names
            ]
            means = np.array([s[0] for s in stats])
            err = np.array([[s[0] - s[1] for s in stats], [s[2] - s[0] for s in stats]])
            offset = (j - (len(methods) - 1) / 2) * width
            ax.bar(xs + offset, means, width, yerr=np.nan_to_num(err), capsize=3, label=method)
        refs = [_reference(results, g, m["key"], m["label"]) for g in names]
        if any(r is not None for r in refs):
            rx = [x for x, r in zip(xs, refs, strict=True) if r is not None]
            ry = [float(r) for r in refs if r is not None]
            ax.scatter(rx, ry, marker="_", s=600, color="black", zorder=3, label="reference")
        ax.set_xticks(xs)
        ax.set_xticklabels(names, fontsize=8)
        ax.set_title(f"{m['key']} {_arrow(m.get('higher_is_better'))}", fontsize=9)
        ax.legend(fontsize=7)
        rel = f"groups_{safe_name(m['key'])}.png"
        _save(fig, folder / rel)
        made.append({"title": f"{m['key']} by group (mean, 95% CI)", "file": rel})
    return made
