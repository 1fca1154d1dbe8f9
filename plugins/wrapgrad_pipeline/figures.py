"""Report figures (PNG, written atomically): a grid of maps per method and a bar chart per
metric."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from wrapgrad.files import atomic_write
from wrapgrad_pipeline.report import arrow, cells, metric_keys
from wrapgrad_pipeline.stats import mean_ci

__all__ = ["bar_charts", "grid_figure", "safe_name"]


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


def bar_charts(results: Mapping[str, Any], folder: Path) -> list[dict[str, str]]:
    """One bar chart per metric key: mean and 95% CI per method and variant."""
    made = []
    enhancers = list(results["enhancers"])
    methods = list(results["methods"])
    for m in metric_keys(results):
        fig = _figure(1.2 + 1.1 * len(enhancers) * max(1, len(methods)) / 2, 3.2)
        ax = fig.add_subplot(1, 1, 1)
        width = 0.8 / max(1, len(enhancers))
        for j, e in enumerate(enhancers):
            stats = [mean_ci(cells(results, meth, m["key"])[e]) for meth in methods]
            means = np.array([s[0] for s in stats])
            err = np.array([[s[0] - s[1] for s in stats], [s[2] - s[0] for s in stats]])
            xs = np.arange(len(methods)) + (j - (len(enhancers) - 1) / 2) * width
            ax.bar(xs, means, width, yerr=np.nan_to_num(err), capsize=2, label=e)
        ax.set_xticks(np.arange(len(methods)))
        ax.set_xticklabels(methods, fontsize=8)
        ax.set_title(f"{m['key']} {arrow(m.get('higher_is_better'))}", fontsize=9)
        ax.legend(fontsize=7)
        rel = f"bar_{safe_name(m['key'])}.png"
        _save(fig, folder / rel)
        made.append({"title": f"{m['key']} (mean, 95% CI)", "file": rel})
    return made
