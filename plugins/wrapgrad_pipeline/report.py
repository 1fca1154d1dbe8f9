"""``results.json`` and ``report.md`` rendered from it.

Everything in ``report.md`` is computed from the results dictionary (what ``results.json``
holds), so :func:`render_markdown` of a re-read ``results.json`` gives the same report
(``wrapgrad report DIR``). The statistics are in :mod:`wrapgrad_pipeline.stats`.

The columns of the tables are the run's *variants* (``results["enhancers"]``, named so for the
files written before several models could be scored): the enhancer labels when the run has one
model, the model labels with one enhancer, ``model/enhancer`` otherwise.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wrapgrad.errors import WrapgradValueError
from wrapgrad_pipeline.stats import BOOTSTRAP, check_expectation, seeded_mean_ci

__all__ = [
    "RESULTS_FORMAT",
    "arrow",
    "cell_stats",
    "cells",
    "expectation_cells",
    "expectation_names",
    "expectation_rows",
    "fill_in",
    "judge",
    "load_results",
    "metric_keys",
    "render_markdown",
    "results_to_json",
    "seed_cells",
    "verdict_lines",
]

RESULTS_FORMAT = "wrapgrad-pipeline-results/1"


# -- results.json ----------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value


def results_to_json(results: Mapping[str, Any]) -> str:
    """The results as strict JSON (non-finite numbers become ``null``)."""
    return json.dumps(_jsonable(results), indent=1, sort_keys=False, allow_nan=False) + "\n"


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a ``results.json`` (a file, or the run's directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise WrapgradValueError(
            f"path: expected a results.json or a run directory holding one, got {str(path)!r}"
        )
    results = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT:
        raise WrapgradValueError(
            f"path: expected a wrapgrad pipeline results file (format {RESULTS_FORMAT!r}), "
            f"got {str(path)!r}"
        )
    return results


# -- reading results -------------------------------------------------------------------------
def _num(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _p(p: Any) -> str:
    if p is None or not math.isfinite(p):
        return "p = n/a"
    return f"p = {p:.2g}" if p >= 1e-4 else "p < 1e-4"


def arrow(hib: Any) -> str:
    """The direction mark of a metric: ↑ higher is better, ↓ lower is better."""
    return {True: "↑", False: "↓"}.get(hib, "")


def metric_keys(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The reported metric columns: ``{"key", "label", "mask", "higher_is_better", "source"}``."""
    return list(results.get("metrics", []))


def cells(results: Mapping[str, Any], method: str, key: str) -> dict[str, list[float]]:
    """Variant label -> the per-sample scores of ``method`` on metric ``key`` (NaN for n/a)."""
    by_variant = results["scores"].get(method, {})
    return {
        e: [math.nan if v is None else float(v) for v in by_variant.get(e, {}).get(key, [])]
        for e in results["enhancers"]
    }


def seed_cells(results: Mapping[str, Any], method: str, key: str) -> dict[str, list[list[float]]]:
    """Variant label -> one per-sample score list per enhancer seed (``scores_by_seed``; one
    list, the ``scores`` themselves, for a variant without seeds or a results file from before
    seeds were kept)."""
    by_seed = results.get("scores_by_seed", {}).get(method, {})
    plain = cells(results, method, key)
    out = {}
    for e, values in plain.items():
        rows = by_seed.get(e, {}).get(key)
        out[e] = (
            [[math.nan if v is None else float(v) for v in row] for row in rows]
            if rows
            else [values]
        )
    return out


def cell_stats(results: Mapping[str, Any], method: str, key: str) -> dict[str, tuple]:
    """Variant label -> ``(mean, low, high, n, scored, seeds)`` over samples and enhancer seeds
    (:func:`~wrapgrad_pipeline.stats.seeded_mean_ci`; ``n`` the samples with a finite score,
    ``scored`` those scored)."""
    out = {}
    for e, rows in seed_cells(results, method, key).items():
        scored = len(rows[0]) if rows else 0
        if scored:
            out[e] = (*seeded_mean_ci(rows), scored, len(rows))
        else:
            out[e] = (math.nan, math.nan, math.nan, 0, 0, len(rows))
    return out


def expectation_names(exp: Mapping[str, Any]) -> list[str]:
    """The labels an expectation names (its ``order``, then its ``best``)."""
    return [*exp.get("order", []), *([exp["best"]] if exp.get("best") else [])]


def expectation_cells(
    results: Mapping[str, Any], exp: Mapping[str, Any]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The ``(method, metric column)`` pairs an expectation is judged on, in report order: its
    ``methods`` (default: every method) by the columns of its ``metric`` (a key, or a label:
    one column per ground-truth mask)."""
    methods = exp.get("methods") or results.get("methods", [])
    keys = [m for m in metric_keys(results) if exp["metric"] in (m["key"], m["label"])]
    for method in [m for m in results.get("methods", []) if m in methods]:
        for m in keys:
            yield method, m


def judge(
    exp: Mapping[str, Any],
    scores: Mapping[str, Sequence[float]],
    higher_is_better: bool,
    by_seed: Mapping[str, Sequence[Sequence[float | None]]],
) -> dict[str, Any]:
    """:func:`~wrapgrad_pipeline.stats.check_expectation` of an expectation of the results
    (its ``order``, ``best`` and ``alpha``, 0.05 when not given) on these scores."""
    return check_expectation(
        scores,
        exp.get("order", []),
        exp.get("best"),
        bool(higher_is_better),
        exp.get("alpha", 0.05),
        by_seed=by_seed,
    )


def expectation_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every expectation judged per method and per metric key (one per ground-truth mask)."""
    rows = []
    for exp in results.get("expectations", []):
        if not set(expectation_names(exp)) <= set(results["enhancers"]):
            continue  # names groups of models: judged over seeds (wrapgrad_pipeline.groups)
        for method, m in expectation_cells(results, exp):
            scores = cells(results, method, m["key"])
            hib = m.get("higher_is_better")
            if hib is None or any(len(v) == 0 for v in scores.values()):
                continue  # no direction (validation refuses it) or nothing scored
            verdict = judge(exp, scores, hib, seed_cells(results, method, m["key"]))
            rows.append({"method": method, "metric": m, "expect": exp, **verdict})
    return rows


# -- report.md ---------------------------------------------------------------------------------
def _section(title: str, body: Iterable[str]) -> list[str]:
    """``## title`` and its lines, or nothing when there are none."""
    body = list(body)
    return [f"## {title}", "", *body] if body else []


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    """A Markdown table: the header, its rule, one line per row of cells, then a blank line."""
    yield "| " + " | ".join(header) + " |"
    yield "|" + "---|" * len(header)
    for row in rows:
        yield "| " + " | ".join(str(cell) for cell in row) + " |"
    yield ""


def _models(results: Mapping[str, Any]) -> dict[str, Any]:
    if "models" in results:
        return dict(results["models"])
    return {"model": results.get("model", {})}


def _run(results: Mapping[str, Any]) -> Iterable[str]:
    data = results.get("data", {})
    pipe = results["pipeline"]
    yield f"- pipeline file: `{pipe['file']}` (sha256 `{pipe['sha256'][:12]}`)"
    split = f"{data.get('split')} split"
    if data.get("split_seed") is not None:
        split += f" of split seed {data['split_seed']}, {data.get('split_size')} items"
    yield (
        f"- data: {data.get('samples')} samples of `{data.get('dataset')}` ({split}), chosen "
        f"with seed {data.get('seed')}"
    )
    models = _models(results)
    for label, model in models.items():
        named = f"{label}: " if len(models) > 1 else ""
        size = f", {model['parameters']:,} parameters" if model.get("parameters") else ""
        yield (
            f"- model: {named}`{model.get('name')}` ({model.get('source')}{size}), seed "
            f"{model.get('seed')}, test accuracy {_num(model.get('test_accuracy'), 4)}"
        )
    if int(results.get("replicates", 1) or 1) > 1:
        yield f"- enhancer seeds per variant: {results['replicates']}"
    yield f"- seeds: {', '.join(f'{k} {v}' for k, v in results.get('seeds', {}).items())}"
    yield "- versions: " + ", ".join(f"{k} {v}" for k, v in results.get("versions", {}).items())
    if results.get("duration_s") is not None:
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in results.get("timings_s", {}).items())
        yield f"- duration: {results['duration_s']:.1f} s" + (f" ({stages})" if stages else "")
        per_metric = results.get("metric_timings_s", {})
        if per_metric:
            yield "- metric time: " + ", ".join(f"{k} {v:.1f} s" for k, v in per_metric.items())
    yield ""


def _calibration(results: Mapping[str, Any]) -> Iterable[str]:
    records = results.get("calibration") or {}
    if not records:
        return
    yield (
        "sigma: σ_NG, the multiplicative weight-noise level; noise_level: α_SG, the input-noise "
        "level relative to each image's range; drop: the relative accuracy drop AD (Eq. 5) "
        "measured on the held-out items, with its bootstrap interval over draws and items."
    )
    yield ""
    yield from _table(
        ("name", "calibrator", "noise", "sigma", "noise_level", "drop", "95% CI", "target",
         "items × draws"),
        (_calibration_row(name, rec) for name, rec in records.items()),
    )  # fmt: skip
    for name, rec in records.items():
        if rec.get("error"):
            yield f"- {name}: {rec['error']}"
            yield ""


def _calibration_row(name: str, rec: Mapping[str, Any]) -> tuple[str, ...]:
    ci = rec.get("drop_ci") or [None, None]
    noise = rec.get("noise_level", rec.get("alpha"))
    sigma = rec.get("sigma")
    if "noise_level" not in rec and rec.get("perturber") == "input":  # before 0.1
        sigma, noise = None, sigma
    return (
        name,
        rec.get("calibrator"),
        rec.get("perturber"),
        _num(sigma),
        _num(noise),
        _num(rec.get("drop")),
        f"[{_num(ci[0])}, {_num(ci[1])}]",
        _num(rec.get("target_drop"), 3),
        f"{rec.get('num_samples', 'n/a')} × {rec.get('draws', 'n/a')}",
    )


def _interval_text(results: Mapping[str, Any]) -> str:
    seeds = int(results.get("replicates", 1) or 1)
    if seeds > 1:
        return (
            f"Mean over samples and {seeds} enhancer seeds, and 95% confidence interval: a "
            f"bootstrap over seeds and samples ({BOOTSTRAP} resamples of both), so it counts the "
            f"Monte-Carlo draws as well as the samples (Student-t over samples for a variant "
            f"without noise); the best mean per row in bold; n: samples scored."
        )
    return (
        "Mean over samples and Student-t 95% confidence interval (one enhancer seed: the "
        "interval is conditional on one set of Monte-Carlo draws); the best mean per row in "
        "bold; n: samples scored."
    )


def _method_table(results: Mapping[str, Any], method: str) -> Iterable[str]:
    variants = list(results["enhancers"])
    yield _interval_text(results)
    yield ""
    yield "| metric | | n | " + " | ".join(variants) + " |"
    yield "|---|---|---|" + "---|" * len(variants)
    for m in metric_keys(results):
        stats = cell_stats(results, method, m["key"])
        means = {e: s[0] for e, s in stats.items() if math.isfinite(s[0])}
        best = None
        if means and m.get("higher_is_better") is not None:
            pick = max if m["higher_is_better"] else min
            best = pick(means, key=means.__getitem__)
        row = []
        for e in variants:
            mean, lo, hi, n, scored, _ = stats[e]
            text = f"{_num(mean)} [{_num(lo)}, {_num(hi)}]"
            if n and (n < scored or n == 1):
                text += f" (n={n})"
            row.append(f"**{text}**" if e == best else text)
        n_text = str(max((s[4] for s in stats.values()), default=0))
        yield (
            f"| {m['key']} | {arrow(m.get('higher_is_better'))} | {n_text} | "
            + " | ".join(row)
            + " |"
        )
    yield ""


def _expect_text(exp: Mapping[str, Any], hib: bool) -> str:
    parts = []
    if exp.get("order"):
        parts.append(
            " < ".join(exp["order"])
            + (" (higher is better)" if hib else " (lower is better: worse to better)")
        )
    if exp.get("best"):
        parts.append(f"best: {exp['best']}")
    return "; ".join(parts)


def _verdict(row: Mapping[str, Any]) -> str:
    """An expectation's verdict: held (every step significant), held in the means, or not."""
    if row["significant"]:
        return "**held** (every step significant)"
    if row["held"]:
        return "**held** in the means (not every step significant)"
    return "**did not hold**"


def _step_marks(step: Mapping[str, Any], hib: bool) -> tuple[str, str]:
    """``(sign, significance)`` of one expected step: ``<`` or ``≥`` (for higher is better),
    and ``" (significant)"``, ``" (not significant)"`` or nothing where it did not improve."""
    sign = ("<" if hib else ">") if step["improved"] else ("≥" if hib else "≤")
    if not step["improved"]:
        return sign, ""
    return sign, " (significant)" if step["significant"] else " (not significant)"


def verdict_lines(
    results: Mapping[str, Any],
    rows: list[dict[str, Any]],
    intro: str,
    detail: Callable[[Mapping[str, Any], Mapping[str, Any]], str],
    digits: int = 4,
) -> Iterable[str]:
    """The lines of judged expectations ``rows`` (of variants here, of groups in
    :mod:`wrapgrad_pipeline.groups`): the file's ``expectations_source``, ``intro``, then per row
    its expectation and verdict, and per step the two means (``digits`` decimals), the sign,
    ``detail(row, step)`` (its p-values, ...) and whether it is significant."""
    if not rows:
        return
    if results.get("expectations_source"):
        yield results["expectations_source"]
        yield ""
    yield intro
    yield ""
    for r in rows:
        m = r["metric"]
        hib = m.get("higher_is_better") is not False
        mask = f", ground-truth mask `{m['mask']}`" if m.get("mask") else ""
        expected = _expect_text(r["expect"], hib)
        yield f"- `{r['method']}`, {m['key']}{mask}: {expected}: {_verdict(r)}"
        for s in r["steps"]:
            sign, sig = _step_marks(s, hib)
            yield (
                f"  - {s['worse']} {_num(s['mean_worse'], digits)} {sign} {s['better']} "
                f"{_num(s['mean_better'], digits)}: {detail(r, s)}{sig}"
            )
    yield ""


def _seed_detail(row: Mapping[str, Any], step: Mapping[str, Any]) -> str:
    """A variant step's p-value and, with several enhancer seeds, its bootstrap p and the
    difference at each seed."""
    d = step.get("seed_differences", [])
    if len(d) <= 1:
        return _p(step["p"])
    flips = "" if all(x > 0 for x in d) or all(x < 0 for x in d) else ", sign flips across seeds"
    diffs = ", ".join(f"{x:+.4f}" for x in d)
    return f"{_p(step['p'])}, bootstrap {_p(step['p_bootstrap'])}, per seed {diffs}{flips}"


def _expectations(results: Mapping[str, Any]) -> Iterable[str]:
    rows = expectation_rows(results)
    seeds = max((r["seeds"] for r in rows), default=1)
    if seeds > 1:
        intro = (
            f"Each step is judged by its means over samples and {seeds} enhancer seeds. It is "
            f"significant when (1) the paired one-sided Wilcoxon signed-rank test on the "
            f"seed-averaged per-sample scores and (2) a paired bootstrap over seeds and samples "
            f"({BOOTSTRAP} resamples of both) each give p < alpha, and (3) the mean difference "
            f"has the same sign at every seed; a difference that flips sign across seeds is "
            f"never significant. Listed per step: the Wilcoxon p, the bootstrap p, and the "
            f"mean difference at each seed."
        )
    else:
        intro = (
            "Each step is judged by its means and a paired one-sided Wilcoxon signed-rank test "
            "on the per-sample scores (with one enhancer seed: conditional on one set of "
            "Monte-Carlo draws)."
        )
    yield from verdict_lines(results, rows, intro, _seed_detail)


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][\w.\-\[\]]*)(?::([^{}]*))?\}")


def _lookup(results: Mapping[str, Any], path: str) -> Any:
    node: Any = results
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif (
            isinstance(node, list)
            and part.lstrip("-").isdigit()
            and -len(node) <= int(part) < len(node)
        ):
            node = node[int(part)]
        elif isinstance(node, list) and (
            keyed := [x for x in node if isinstance(x, Mapping) and x.get("key") == part]
        ):
            # a row by its key: `metrics.robustness`, `metrics.localisation[square]`
            node = keyed[0]
        else:
            return None
    return node


def fill_in(text: str, results: Mapping[str, Any]) -> str:
    """``text`` with every ``{path}`` / ``{path:format}`` replaced by the value at the dotted
    ``path`` of the results (``{calibration.sg.noise_level:.3f}``; list items by index or, for
    rows with a ``key``, by it: ``{metrics.robustness.samples}``), or
    ``n/a`` where there is none or the format does not apply."""

    def one(match: re.Match[str]) -> str:
        value = _lookup(results, match.group(1))
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "n/a"
        try:
            return format(value, match.group(2) or "")
        except (TypeError, ValueError):
            return "n/a"

    return _PLACEHOLDER.sub(one, text)


def _deviations(results: Mapping[str, Any]) -> Iterable[str]:
    for text in results.get("deviations", []):
        yield f"- {fill_in(text, results)}"
    if results.get("deviations"):
        yield ""


def _sweep(results: Mapping[str, Any]) -> Iterable[str]:
    sweep = results.get("sweep")
    if not sweep:
        return
    base = sweep["baseline"]
    yield (
        f"`{sweep['method']}` maps scored by {sweep['metric']} on the `{sweep['mask']}` mask "
        f"({sweep['samples']} samples, one enhancer seed) at each noise level, against the "
        f"relative accuracy drop AD that level causes, measured as the calibration measured "
        f"it (same held-out items and draws: at scale 1 it is the calibrated drop). Baseline: "
        f"{_num(base['mean'])} [{_num(base['low'])}, {_num(base['high'])}]."
    )
    yield ""
    yield from _table(
        ("curve", "level", "× calibrated", "drop AD", "score", "95% CI"),
        (row for label, curve in sweep["curves"].items() for row in _sweep_rows(label, curve)),
    )


def _sweep_rows(label: str, curve: Mapping[str, Any]) -> Iterator[tuple[str, ...]]:
    rows = [(p, None) for p in curve["points"]]
    rows += [(p, name) for name, p in curve.get("named", {}).items()]
    for p, name in sorted(rows, key=lambda r: r[0]["level"]):
        scale = "—" if p.get("scale") is None else f"{p['scale']:g}"
        level = f"{curve['option']} = {p['level']:.4g}" + (f" ({name})" if name else "")
        mark = " ★" if p.get("scale") == 1.0 else ""
        yield (
            f"{label}{mark}",
            level,
            scale,
            _num(p["drop"], 3),
            _num(p["mean"]),
            f"[{_num(p['low'])}, {_num(p['high'])}]",
        )


def _attacks(results: Mapping[str, Any]) -> Iterable[str]:
    if not results.get("attacks"):
        return
    yield from _table(
        ("attack", "method", "variant", "labels kept", "mean perturbation"),
        (
            (
                a["label"],
                method,
                e,
                _num(run.get("label_kept"), 3),
                _num(run.get("perturbation"), 4),
            )
            for a in results["attacks"]
            for method, by_variant in a.get("runs", {}).items()
            for e, run in by_variant.items()
        ),
    )


def _errors(results: Mapping[str, Any]) -> Iterable[str]:
    if not results.get("errors"):
        return
    yield "These cells could not be computed; their scores are n/a."
    yield ""
    for e in results["errors"]:
        yield f"- {e['metric']}, `{e['method']}`, {e['enhancer']}: {e['error']}"
    yield ""


def _figures(results: Mapping[str, Any]) -> Iterable[str]:
    for fig in results.get("figures", []):
        yield f"![{fig['title']}]({fig['path']})"
        yield ""


def render_markdown(results: Mapping[str, Any]) -> str:
    """``report.md``: the run's facts, deviations, calibration, tables of mean and 95% CI,
    expectations, the noise-level sweep, attacks, errors and figures."""
    from wrapgrad_pipeline import groups  # it uses this module's helpers

    lines = [f"# {results['name']}", ""]
    if results.get("description"):
        lines += [results["description"].strip(), ""]
    if results.get("smoke"):
        lines += [
            "> **Smoke run**: every size was shrunk (`--smoke`); the numbers only show that the",
            "> pipeline runs and say nothing about the methods.",
            "",
        ]
    lines += _section("Run", _run(results))
    lines += _section("Deviations from the protocol", _deviations(results))
    lines += _section("Calibration", _calibration(results))
    lines += _section("Groups over seeds", groups.table_lines(results))
    for method in results["methods"]:
        lines += _section(method, _method_table(results, method))
    lines += _section("Expectations", _expectations(results))
    lines += _section("Expectations over seeds", groups.expectation_lines(results))
    lines += _section("Noise-level sweep", _sweep(results))
    for extra in results.get("sections", []):  # added by plugins' steps: {"title", "lines"}
        lines += _section(extra["title"], extra["lines"])
    lines += _section("Attacks", _attacks(results))
    lines += _section("Errors", _errors(results))
    lines += _section("Figures", _figures(results))
    return "\n".join(lines).rstrip() + "\n"
