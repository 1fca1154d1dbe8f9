"""Report figures (PNG, written atomically): a grid of maps per method and a bar chart per
metric."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wrapgrad.files import atomic_write
from wrapgrad_pipeline.report import arrow, cell_stats, metric_keys

__all__ = ["bar_charts", "grid_figure", "grouped_bars", "safe_name", "save_metric_chart"]


def safe_name(text: str) -> str:
    """``text`` as a file-name part (letters, digits, ``_`` and ``-``)."""
    return "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in text)


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
    """Rows: samples; columns: the input, each ground-truth mask, then each variant's map
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


def grouped_bars(
    ax: Any, ticks: Sequence[str], series: Mapping[str, Sequence[tuple[float, ...]]]
) -> np.ndarray:
    """Bars of means with their 95% intervals as error bars on ``ax``: one group per tick, one
    bar per series in each (``series[label][i]`` is ``(mean, low, high, ...)`` at tick ``i``).
    Returns the ticks' positions."""
    xs = np.arange(len(ticks))
    width = 0.8 / max(1, len(series))
    for j, (label, stats) in enumerate(series.items()):
        means = np.array([s[0] for s in stats])
        err = np.array([[s[0] - s[1] for s in stats], [s[2] - s[0] for s in stats]])
        offset = (j - (len(series) - 1) / 2) * width
        ax.bar(xs + offset, means, width, yerr=np.nan_to_num(err), capsize=2, label=label)
    ax.set_xticks(xs)
    ax.set_xticklabels(ticks, fontsize=8)
    return xs


def save_metric_chart(
    fig: Any, ax: Any, metric: Mapping[str, Any], path: Path, title: str
) -> dict[str, str]:
    """Title ``ax`` with the metric's key and direction, add the legend, write ``path`` and
    return its entry in ``results["figures"]`` (without the folder)."""
    ax.set_title(f"{metric['key']} {arrow(metric.get('higher_is_better'))}", fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, path)
    return {"title": title, "file": path.name}


def bar_charts(results: Mapping[str, Any], folder: Path) -> list[dict[str, str]]:
    """One bar chart per metric key: mean and 95% CI per method and variant (over samples and
    enhancer seeds, as the report's tables)."""
    made = []
    enhancers = list(results["enhancers"])
    methods = list(results["methods"])
    for m in metric_keys(results):
        fig = _figure(1.2 + 1.1 * len(enhancers) * max(1, len(methods)) / 2, 3.2)
        ax = fig.add_subplot(1, 1, 1)
        stats = [cell_stats(results, meth, m["key"]) for meth in methods]  # one bootstrap a cell
        series = {e: [s[e] for s in stats] for e in enhancers}
        grouped_bars(ax, methods, series)
        path = folder / f"bar_{safe_name(m['key'])}.png"
        made.append(save_metric_chart(fig, ax, m, path, f"{m['key']} (mean, 95% CI)"))
    return made


def sweep_figure(path: Path, sweep: Mapping[str, Any]) -> Path:
    """The noise-level sweep (the NoiseGrad paper's Fig. 9 analogue): the metric's mean and 95%
    interval against the relative accuracy drop of each level, one line per curve; a star at
    the calibrated level, a square at each named level, the plain method as a dashed line and
    the calibrations' target drop as a dotted one."""
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    base = sweep["baseline"]
    ax.axhline(base["mean"], color="grey", ls="--", lw=1, label="Baseline")
    targets = set()
    for j, (label, curve) in enumerate(sweep["curves"].items()):
        color = f"C{j}"
        points = sorted(curve["points"], key=lambda p: p["drop"])
        xs = np.array([p["drop"] for p in points])
        ys = np.array([p["mean"] for p in points])
        err = np.array(
            [[p["mean"] - p["low"] for p in points], [p["high"] - p["mean"] for p in points]]
        )
        ax.errorbar(xs, ys, yerr=np.nan_to_num(err), fmt="o-", color=color, capsize=2, label=label)
        for p in points:
            if p.get("scale") == 1.0:
                ax.plot(p["drop"], p["mean"], "*", color=color, ms=14, mec="black")
        for name, p in curve.get("named", {}).items():
            ax.plot(p["drop"], p["mean"], "s", color=color, ms=8, mec="black")
            ax.annotate(
                f"{label} {curve['option']} = {p['level']:g} ({name})",
                (p["drop"], p["mean"]),
                textcoords="offset points",
                xytext=(4, 6),
                fontsize=7,
            )
        if curve.get("target_drop") is not None:
            targets.add(float(curve["target_drop"]))
    for t in sorted(targets):
        ax.axvline(t, color="black", ls=":", lw=1, label=f"target drop {t:g}")
    ax.set_xlabel("relative accuracy drop AD (Eq. 5)")
    ax.set_ylabel(f"{sweep['metric']} [{sweep['mask']}] (mean, 95% CI)")
    ax.set_title(
        f"{sweep['method']}: {sweep['metric']} vs accuracy drop ({sweep['samples']} samples; "
        f"★ calibrated level)",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    return _save(fig, path)
