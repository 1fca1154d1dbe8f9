"""Built-in plugin: the Quantus bridge, wrapgrad explanations (enhanced ones included) inside
any Quantus metric, and every Quantus metric as a registered wrapgrad metric.

* :func:`quantus_explain`: an ``explain_func`` in Quantus' calling convention, configured through
  ``explain_func_kwargs`` exactly like :func:`wrapgrad.wrap`;
* :func:`quantus_metric`: any Quantus metric by name, run on torch tensors with a wrapgrad
  ``explain`` (:class:`QuantusMetric`);
* the ``wrapgrad_metrics`` hook: each Quantus metric class as metric ``quantus_<snake case>``
  (``wrapgrad.metric("quantus_max_sensitivity", nr_samples=10)``; in pipeline files
  ``quantus = "MaxSensitivity"``), with its call form, score direction and ``--smoke`` caps
  declared; curves and per-layer scores reduced to one score per sample
  (:mod:`wrapgrad_quantus.reductions`), Quantus classes that fail here repaired by subclasses
  (:mod:`wrapgrad_quantus.fixes`).

Example::

    from wrapgrad_quantus import quantus_metric
    scores = quantus_metric("MaxSensitivity", nr_samples=10)(model, x, y, explain)
"""

from __future__ import annotations

from collections.abc import Iterator

from wrapgrad import hookimpl
from wrapgrad.records import MetricSpec
from wrapgrad_quantus.explain import explain_func_from, quantus_explain
from wrapgrad_quantus.metrics import (
    QuantusMaskMetric,
    QuantusMetric,
    QuantusMosaicMetric,
    metric_name,
    metric_specs,
    quantus_metric,
    quantus_metrics,
)

__all__ = [
    "QuantusMaskMetric",
    "QuantusMetric",
    "QuantusMosaicMetric",
    "explain_func_from",
    "metric_name",
    "quantus_explain",
    "quantus_metric",
    "quantus_metrics",
]


@hookimpl
def wrapgrad_metrics() -> Iterator[MetricSpec]:
    yield from metric_specs()
