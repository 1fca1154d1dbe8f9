r"""One score per sample for the Quantus metrics that return curves or per-layer scores.

wrapgrad's :class:`~wrapgrad.protocols.Metric` promises one score per sample with a declared
direction. A few Quantus metrics return more: a curve per sample (PixelFlipping, Selectivity,
RegionPerturbation), a curve per sample kept inside the metric (ROAD), or a dict of per-sample
similarities per randomised layer (MPRT, SmoothMPRT, ModelParameterRandomisation). Each gets
the reduction its paper or Quantus' own aggregation defines, in :data:`REDUCTIONS`; the raw
result stays reachable as :meth:`~wrapgrad_quantus.QuantusMetric.raw`.

* **Area under the curve** (:func:`area_under_curve`; PixelFlipping, Bach et al. 2015, and
  Selectivity, Montavon et al. 2018): Quantus' per-sample AUC (PixelFlipping's
  ``return_auc_per_sample``, the ``get_auc_score`` of both), the composite trapezoidal rule
  with unit spacing over the curve :math:`p_1, \dots, p_K` of the target's predictions after
  each perturbation step:

  .. math:: \mathrm{AUC} = \sum_{k=1}^{K-1} \frac{p_k + p_{k+1}}{2}.

  Lower is better: the prediction falls fast when the most relevant features go first.
* **AOPC** (:func:`aopc`; RegionPerturbation, Samek et al. 2017): the area over the MoRF
  perturbation curve, as the paper defines it. Quantus' curve is the drop :math:`d_k = f(x) - f(x^{(k)})` after
  each of the :math:`L` regions; with the paper's :math:`d_0 = 0` for the unperturbed input,

  .. math:: \mathrm{AOPC} = \frac{1}{L + 1} \sum_{k=0}^{L} d_k.

  Higher is better for the MoRF order (the paper ranks heatmaps by a large AOPC: the
  prediction drops steeply when the most relevant regions go first), lower for LeRF, none for
  a random order. Quantus 0.6 declares lower for every order, which contradicts its own curve
  of drops; the bridge declares the paper's direction (tested on a linear model whose exact
  attributions are known, ``tests/test_quantus_reductions.py``).
* **Mean over the percentages** (:func:`mean_over_percentages`; ROAD, Rong et al. 2022): ROAD
  records, for each percentage :math:`q_1, \dots, q_P` of the most relevant features replaced
  by noisy linear imputation, whether the model still predicts the target, and Quantus reports
  the accuracy per percentage. The per-sample score is the fraction of the percentages at
  which the prediction survives, :math:`\frac{1}{P}\sum_j \mathbb{1}[\hat y(x^{(q_j)}) = y]`,
  so the batch mean of the scores is the mean of Quantus' accuracy curve. Lower is better
  (Quantus' direction: the prediction is lost early when the most relevant features go).
* **Mean over the randomised layers** (:func:`mean_over_layers`; MPRT, Adebayo et al. 2018,
  and its smoothed variant, Hedström et al. 2024): the similarity between the original
  explanation and the explanation after randomising each layer (cascading from the top by
  default), averaged over the layers: Quantus' ``return_average_correlation`` ("one float per
  sample, the average correlation coefficient across the layers"). Quantus 0.6 means to skip
  the similarity to the unrandomised model but tests the key ``"orig"`` where it stores
  ``"original"``; the bridge leaves ``"original"`` out. Lower is better (an explanation that
  depends on the parameters changes when they are randomised).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
import numpy as np

from wrapgrad.errors import WrapgradValueError
from wrapgrad_quantus.fixes import trapezoid

__all__ = [
    "REDUCTIONS",
    "Reduction",
    "aopc",
    "area_under_curve",
    "mean_over_layers",
    "mean_over_percentages",
]


def _curves(values: Any, what: str) -> np.ndarray:
    curves = np.asarray(values, dtype=np.float64)
    if curves.ndim != 2 or curves.shape[1] == 0:
        raise WrapgradValueError(
            f"{what}: expected one curve per sample, shape (B, steps), got shape {curves.shape}"
        )
    return curves


def area_under_curve(curves: Any) -> np.ndarray:
    """Each row's area by the trapezoidal rule with unit spacing (Quantus' ``calculate_auc``).

    >>> area_under_curve([[1.0, 0.5, 0.0], [1.0, 1.0, 1.0]]).tolist()
    [1.0, 2.0]
    """
    return np.asarray(trapezoid(_curves(curves, "curves"), dx=1, axis=1), dtype=np.float64)


def aopc(drops: Any) -> np.ndarray:
    """Each row's area over the perturbation curve, the mean of its drops with ``d_0 = 0``
    (Samek et al. 2017's AOPC).

    >>> aopc([[0.2, 0.4, 0.6], [0.0, 0.0, 0.4]]).round(12).tolist()
    [0.3, 0.1]
    """
    d = _curves(drops, "drops")
    return d.sum(axis=1) / (d.shape[1] + 1)


def mean_over_percentages(kept: Any) -> np.ndarray:
    """Each row's fraction of percentages at which the prediction survives (ROAD).

    >>> mean_over_percentages([[1, 1, 0, 0], [1, 0, 0, 0]]).tolist()
    [0.5, 0.25]
    """
    return _curves(kept, "sample_curves").mean(axis=1)


#: The key of Quantus' randomisation results that holds the unrandomised model's similarity.
ORIGINAL = "original"


def mean_over_layers(scores: Mapping[str, Any]) -> np.ndarray:
    """Each sample's similarity averaged over the randomised layers (``"original"`` left out).

    >>> mean_over_layers({"original": [1.0, 1.0], "fc": [0.2, 0.4], "conv": [0.6, 0.0]}).tolist()
    [0.4, 0.2]
    """
    if not isinstance(scores, Mapping):
        raise WrapgradValueError(
            f"scores: expected per-sample scores by layer (a dict), got {type(scores).__name__}"
        )
    layers = [np.asarray(v, dtype=np.float64) for k, v in scores.items() if k != ORIGINAL]
    if not layers or any(v.ndim != 1 or v.shape != layers[0].shape for v in layers):
        raise WrapgradValueError(
            "scores: expected one score per sample for at least one randomised layer, got "
            f"layers {sorted(scores)}"
        )
    return np.mean(np.stack(layers), axis=0)


def _result(quantus_metric: Any, out: Any) -> Any:
    return out


def _sample_curves(quantus_metric: Any, out: Any) -> Any:
    return quantus_metric.sample_curves


def _region_direction(quantus_metric: Any) -> bool | None:
    order = str(getattr(quantus_metric, "order", "morf")).lower()
    return {"morf": True, "lerf": False}.get(order)


@attrs.frozen(kw_only=True)
class Reduction:
    """How the bridge turns a Quantus metric's result into one score per sample."""

    name: str
    """``"area_under_curve"``, ``"aopc"``, ``"mean_over_percentages"``, ``"mean_over_layers"``."""
    function: Callable[[Any], np.ndarray]
    """``values -> (B,)`` scores."""
    values: Callable[[Any, Any], Any] = _result
    """``(quantus metric, result) -> values``: what the reduction reads (the result, or what
    the metric kept of its last call)."""
    direction: Callable[[Any], bool | None] | None = None
    """``quantus metric -> higher_is_better`` where it differs from Quantus' ``score_direction``
    (None: Quantus' direction)."""

    def __call__(self, quantus_metric: Any, out: Any) -> np.ndarray:
        return self.function(self.values(quantus_metric, out))


#: The reductions by Quantus class name (see the module docstring for the sources).
REDUCTIONS: dict[str, Reduction] = {
    "PixelFlipping": Reduction(name="area_under_curve", function=area_under_curve),
    "Selectivity": Reduction(name="area_under_curve", function=area_under_curve),
    "RegionPerturbation": Reduction(name="aopc", function=aopc, direction=_region_direction),
    "ROAD": Reduction(
        name="mean_over_percentages", function=mean_over_percentages, values=_sample_curves
    ),
    **{
        name: Reduction(name="mean_over_layers", function=mean_over_layers)
        for name in ("MPRT", "SmoothMPRT", "ModelParameterRandomisation")
    },
}
