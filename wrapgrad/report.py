"""Pipeline reports: statistics, ``report.md`` rendered from ``results.json``, and PNG figures.

Everything in ``report.md`` is computed from the results dictionary (what ``results.json`` holds),
so :func:`render_markdown` of a re-read ``results.json`` gives the same report
(``wrapgrad report DIR``).

Statistics, per method, enhancer and metric over the n evaluated samples s_i (NaN scores, e.g.
a Quantus metric that could not be computed for a sample, are left out and counted):

.. math::
    \\bar s \\pm t_{0.975,\\,n-1}\\, \\frac{\\mathrm{sd}(s)}{\\sqrt n}

(a Student-t 95% confidence interval of the mean). Expectations ("Baseline < SG < NG < FG") are
judged step by step with the paired one-sided Wilcoxon signed-rank test
(:func:`scipy.stats.wilcoxon`) on the per-sample scores, as the NoiseGrad paper's Table 1 does
(Bykov et al. 2022: "according to the Wilcoxon signed-rank test for p = 0.05").
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wrapgrad.errors import WrapgradValueError
from wrapgrad.files import atomic_write

__all__ = [
    "RESULTS_FORMAT",
    "atomic_write",
    "bar_charts",
    "check_expectation",
    "grid_figure",
    "load_results",
    "mean_ci",
    "paired_wilcoxon",
    "render_markdown",
    "results_to_json",
]

RESULTS_FORMAT = "wrapgrad-pipeline-results/1"


# -- statistics ------------------------------------------------------------------------------
def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, int]:
    """``(mean, low, high, n)``: the mean of the finite values and its Student-t interval.

    With ``n = 1`` there is no spread to estimate, so the interval is ``(nan, nan)`` (reported
    as n/a), never a zero-width interval; with ``n = 0`` every number is NaN.
    """
    from scipy import stats

    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan, math.nan, 1
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


def paired_wilcoxon(
    worse: Sequence[float], better: Sequence[float], higher_is_better: bool
) -> float:
    """One-sided p-value of the paired Wilcoxon signed-rank test that ``better`` beats ``worse``.

    Pairs with a NaN are dropped. Returns 1.0 when every difference is zero and NaN when no pair
    is left.
    """
    from scipy import stats

    a = np.asarray(worse, dtype=np.float64)
    b = np.asarray(better, dtype=np.float64)
    if a.shape != b.shape:
        raise WrapgradValueError(
            f"better: expected as many scores as worse ({a.shape[0]}), got {b.shape[0]}"
        )
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size == 0:
        return math.nan
    diff = (b - a) if higher_is_better else (a - b)
    if np.all(diff == 0):
        return 1.0
    return float(stats.wilcoxon(diff, alternative="greater").pvalue)


def check_expectation(
    scores: Mapping[str, Sequence[float]],
    order: Sequence[str],
    best: str | None,
    higher_is_better: bool,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Judge an expected ranking of enhancers on one metric.

    ``order`` lists labels from worst to best: each step must improve the mean (``held``), and is
    ``significant`` when the one-sided paired Wilcoxon p-value is below ``alpha``. ``best`` must
    have the best mean and beat every other label (each comparison tested).

    Returns:
        ``{"held": bool, "significant": bool, "steps": [{"worse", "better", "mean_worse",
        "mean_better", "improved", "p"}...]}``.
    """

    def mean(label: str) -> float:
        return mean_ci(scores[label])[0]

    pairs: list[tuple[str, str]] = list(itertools.pairwise(order))
    if best is not None:
        pairs += [(other, best) for other in scores if other != best and (other, best) not in pairs]
    steps = []
    for worse, better in pairs:
        mw, mb = mean(worse), mean(better)
        improved = bool(mb > mw) if higher_is_better else bool(mb < mw)
        p = paired_wilcoxon(scores[worse], scores[better], higher_is_better)
        steps.append(
            {
                "worse": worse,
                "better": better,
                "mean_worse": mw,
                "mean_better": mb,
                "improved": improved,
                "p": p,
            }
        )
    held = all(s["improved"] for s in steps)
    significant = held and all(s["p"] < alpha for s in steps)
    return {"held": held, "significant": significant, "steps": steps}


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


# -- report.md -------------------------------------------------------------------------------
def _num(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _p(p: Any) -> str:
    if p is None or not math.isfinite(p):
        return "p = n/a"
    return f"p = {p:.2g}" if p >= 1e-4 else "p < 1e-4"


def _arrow(hib: Any) -> str:
    return {True: "↑", False: "↓"}.get(hib, "")


def metric_keys(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The reported metric columns: ``{"key", "label", "mask", "higher_is_better", "source"}``."""
    return list(results.get("metrics", []))


def _cells(results: Mapping[str, Any], method: str, key: str) -> dict[str, list[float]]:
    by_enh = results["scores"].get(method, {})
    return {
        e: [math.nan if v is None else float(v) for v in by_enh.get(e, {}).get(key, [])]
        for e in results["enhancers"]
    }


def expectation_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every expectation judged per method and per metric key (one per ground-truth mask)."""
    rows = []
    metrics = metric_keys(results)
    for exp in results.get("expectations", []):
        keys = [m for m in metrics if m["key"] == exp["metric"] or m["label"] == exp["metric"]]
        for method in results["methods"]:
            for m in keys:
                scores = _cells(results, method, m["key"])
                hib = m.get("higher_is_better")
                if hib is None or any(len(v) == 0 for v in scores.values()):
                    continue  # no direction (validation refuses it) or nothing scored
                verdict = check_expectation(
                    scores,
                    exp.get("order", []),
                    exp.get("best"),
                    bool(hib),
                    exp.get("alpha", 0.05),
                )
                rows.append({"method": method, "metric": m, "expect": exp, **verdict})
    return rows


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


def render_markdown(results: Mapping[str, Any]) -> str:
    """``report.md``: the run's facts, tables of mean and 95% CI, expectations, figures."""
    lines: list[str] = []
    out = lines.append
    out(f"# {results['name']}")
    out("")
    if results.get("description"):
        out(results["description"].strip())
        out("")
    if results.get("smoke"):
        out("> **Smoke run**: every size was shrunk (`--smoke`); the numbers only show that the")
        out("> pipeline runs and say nothing about the methods.")
        out("")
    model = results.get("model", {})
    data = results.get("data", {})
    versions = results.get("versions", {})
    out("## Run")
    out("")
    out(
        f"- pipeline file: `{results['pipeline']['file']}` (sha256 `{results['pipeline']['sha256'][:12]}`)"
    )
    out(
        f"- data: {data.get('samples')} samples of `{data.get('dataset')}` ({data.get('split')} split), "
        f"seed {data.get('seed')}"
    )
    acc = model.get("test_accuracy")
    out(
        f"- model: `{model.get('name')}` ({model.get('source')}), seed {model.get('seed')}, "
        f"test accuracy {_num(acc, 4)}"
    )
    out(f"- seeds: {', '.join(f'{k} {v}' for k, v in results.get('seeds', {}).items())}")
    out("- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if results.get("duration_s") is not None:
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in results.get("timings_s", {}).items())
        out(f"- duration: {results['duration_s']:.1f} s" + (f" ({stages})" if stages else ""))
        per_metric = results.get("metric_timings_s", {})
        if per_metric:
            out("- metric time: " + ", ".join(f"{k} {v:.1f} s" for k, v in per_metric.items()))
    out("")
    if results.get("calibration"):
        out("## Calibration")
        out("")
        out("| name | calibrator | noise | sigma | alpha | drop | 95% CI | target |")
        out("|---|---|---|---|---|---|---|---|")
        for name, rec in results["calibration"].items():
            ci = rec.get("drop_ci") or [None, None]
            out(
                f"| {name} | {rec.get('calibrator')} | {rec.get('perturber')} | {_num(rec.get('sigma'))} "
                f"| {_num(rec.get('alpha'))} | {_num(rec.get('drop'))} | [{_num(ci[0])}, {_num(ci[1])}] "
                f"| {_num(rec.get('target_drop'), 3)} |"
            )
        out("")
        for name, rec in results["calibration"].items():
            if rec.get("error"):
                out(f"- {name}: {rec['error']}")
                out("")
    enhancers = list(results["enhancers"])
    metrics = metric_keys(results)
    for method in results["methods"]:
        out(f"## {method}")
        out("")
        out("Mean over samples and 95% confidence interval; the best mean per row in bold.")
        out("")
        out("| metric | | " + " | ".join(enhancers) + " |")
        out("|---|---|" + "---|" * len(enhancers))
        for m in metrics:
            cells = _cells(results, method, m["key"])
            stats = {e: mean_ci(v) for e, v in cells.items()}
            means = {e: s[0] for e, s in stats.items() if math.isfinite(s[0])}
            best = None
            if means and m.get("higher_is_better") is not None:
                pick = max if m["higher_is_better"] else min
                best = pick(means, key=means.__getitem__)
            row = []
            for e in enhancers:
                mean, lo, hi, n = stats[e]
                text = f"{_num(mean)} [{_num(lo)}, {_num(hi)}]"
                if n and (n < len(cells[e]) or n == 1):
                    text += f" (n={n})"
                row.append(f"**{text}**" if e == best else text)
            out(f"| {m['key']} | {_arrow(m.get('higher_is_better'))} | " + " | ".join(row) + " |")
        out("")
    rows = expectation_rows(results)
    if rows:
        out("## Expectations")
        out("")
        if results.get("expectations_source"):
            out(results["expectations_source"])
            out("")
        out(
            "Each step is judged by its means and a paired one-sided Wilcoxon signed-rank test "
            "on the per-sample scores."
        )
        out("")
        for r in rows:
            m = r["metric"]
            hib = m.get("higher_is_better") is not False
            verdict = (
                "**held** (every step significant)"
                if r["significant"]
                else "**held** in the means (not every step significant)"
                if r["held"]
                else "**did not hold**"
            )
            mask = f", ground-truth mask `{m['mask']}`" if m.get("mask") else ""
            out(f"- `{r['method']}`, {m['key']}{mask}: {_expect_text(r['expect'], hib)}: {verdict}")
            alpha = r["expect"].get("alpha", 0.05)
            for s in r["steps"]:
                sign = ("<" if hib else ">") if s["improved"] else ("≥" if hib else "≤")
                sig = (
                    ""
                    if not s["improved"]
                    else (" (significant)" if s["p"] < alpha else " (not significant)")
                )
                out(
                    f"  - {s['worse']} {_num(s['mean_worse'])} {sign} {s['better']} "
                    f"{_num(s['mean_better'])}: {_p(s['p'])}{sig}"
                )
        out("")
    if results.get("attacks"):
        out("## Attacks")
        out("")
        out("| attack | method | enhancer | labels kept | mean perturbation |")
        out("|---|---|---|---|---|")
        for a in results["attacks"]:
            for method, by_enh in a.get("runs", {}).items():
                for e, run in by_enh.items():
                    out(
                        f"| {a['label']} | {method} | {e} | {_num(run.get('label_kept'), 3)} "
                        f"| {_num(run.get('perturbation'), 4)} |"
                    )
        out("")
    if results.get("errors"):
        out("## Errors")
        out("")
        out("These cells could not be computed; their scores are n/a.")
        out("")
        for e in results["errors"]:
            out(f"- {e['metric']}, `{e['method']}`, {e['enhancer']}: {e['error']}")
        out("")
    figures = results.get("figures", [])
    if figures:
        out("## Figures")
        out("")
        for fig in figures:
            out(f"![{fig['title']}]({fig['path']})")
            out("")
    return "\n".join(lines).rstrip() + "\n"


# -- figures ---------------------------------------------------------------------------------
def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def grid_figure(
    path: Path,
    inputs: np.ndarray,
    masks: Mapping[str, np.ndarray],
    maps: Mapping[str, np.ndarray],
    title: str,
) -> Path:
    """Rows: samples; columns: the input, each ground-truth mask, then each enhancer's map
    (magnitude summed over channels, scaled per map to its own maximum)."""
    n = inputs.shape[0]
    cols = 1 + len(masks) + len(maps)
    fig = _figure(1.6 * cols, 1.6 * n + 0.5)
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        img = np.transpose(inputs[i], (1, 2, 0))
        panels: list[tuple[str, np.ndarray, str]] = [
            ("input", img[..., 0] if img.shape[-1] == 1 else np.clip(img, 0, 1), "gray")
        ]
        panels += [(f"mask: {k}", v[i].reshape(v[i].shape[-2:]), "gray") for k, v in masks.items()]
        for label, m in maps.items():
            a = np.abs(m[i]).sum(axis=0)
            top = a.max()
            panels.append((label, a / top if top > 0 else a, "inferno"))
        for j, (name, im, cmap) in enumerate(panels):
            ax = axes[i][j]
            ax.imshow(im, cmap=cmap, vmin=0, vmax=1 if j else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def bar_charts(results: Mapping[str, Any], folder: Path) -> list[dict[str, str]]:
    """One bar chart per metric key: mean and 95% CI per method and enhancer."""
    made = []
    enhancers = list(results["enhancers"])
    methods = list(results["methods"])
    for m in metric_keys(results):
        fig = _figure(1.2 + 1.1 * len(enhancers) * max(1, len(methods)) / 2, 3.2)
        ax = fig.add_subplot(1, 1, 1)
        width = 0.8 / max(1, len(enhancers))
        for j, e in enumerate(enhancers):
            stats = [mean_ci(_cells(results, meth, m["key"])[e]) for meth in methods]
            means = np.array([s[0] for s in stats])
            err = np.array([[s[0] - s[1] for s in stats], [s[2] - s[0] for s in stats]])
            xs = np.arange(len(methods)) + (j - (len(enhancers) - 1) / 2) * width
            ax.bar(xs, means, width, yerr=np.nan_to_num(err), capsize=2, label=e)
        ax.set_xticks(np.arange(len(methods)))
        ax.set_xticklabels(methods, fontsize=8)
        ax.set_title(f"{m['key']} {_arrow(m.get('higher_is_better'))}", fontsize=9)
        ax.legend(fontsize=7)
        safe = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in m["key"])
        rel = f"bar_{safe}.png"
        _save(fig, folder / rel)
        made.append({"title": f"{m['key']} (mean, 95% CI)", "file": rel})
    return made
