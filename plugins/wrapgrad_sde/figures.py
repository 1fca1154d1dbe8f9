"""The IG saturation figure (Jha et al. 2022, Figs. 3-4), written atomically as a PNG.

Three panels over the path position α of Integrated Gradients, one line per model kind (mean
over the training seeds and samples, with a band of ±1.96 standard errors over them):

1. the target logit along the path, scaled per sample to [0, 1] between the path's first and
   last points (the paper's left plots: where it saturates);
2. the gradient norm relative to its mean along the path (the centre plots: how much the
   saturated part of the path still contributes);
3. the cosine between the gradient at α and the path's mean gradient (the right plots: aligned
   gradients add up, random ones cancel).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wrapgrad.files import atomic_write

__all__ = ["saturation_figure", "saturation_panels"]


def saturation_panels(curves: Sequence[Any]) -> dict[str, np.ndarray]:
    """The three panels' per-sample rows ``(runs * B, S)`` of one kind's saturation curves
    (:class:`SaturationCurve` s of its seeds), and ``alpha`` ``(S,)``."""
    logits = np.concatenate([c.logits.numpy() for c in curves])
    norms = np.concatenate([c.grad_norms.numpy() for c in curves])
    align = np.concatenate([c.alignment.numpy() for c in curves])
    span = logits[:, -1:] - logits[:, :1]
    span = np.where(np.abs(span) > 1e-12, span, 1.0)
    mean_norm = norms.mean(axis=1, keepdims=True)
    return {
        "alpha": curves[0].alphas.numpy(),
        "logit": (logits - logits[:, :1]) / span,
        "gradient": norms / np.where(mean_norm > 0, mean_norm, 1.0),
        "alignment": align,
    }


def saturation_figure(path: Path, by_kind: Mapping[str, Sequence[Any]]) -> Path:
    """Draw the three panels for every kind (``label -> curves``) into ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.4), dpi=100)
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    titles = {
        "logit": "target logit (scaled to [0, 1])",
        "gradient": "gradient norm / its path mean",
        "alignment": "cos(gradient, mean gradient)",
    }
    for j, (label, curves) in enumerate(by_kind.items()):
        panels = saturation_panels(curves)
        alpha = panels["alpha"]
        for ax, name in zip(axes, titles, strict=True):
            rows = panels[name]
            mean = np.nanmean(rows, axis=0)
            half = 1.96 * np.nanstd(rows, axis=0) / np.sqrt(max(1, rows.shape[0]))
            ax.plot(alpha, mean, color=f"C{j}", label=label)
            ax.fill_between(alpha, mean - half, mean + half, color=f"C{j}", alpha=0.2, lw=0)
    for ax, title in zip(axes, titles.values(), strict=True):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("α along the IG path")
    axes[0].axhline(0.95, color="grey", ls=":", lw=1)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
