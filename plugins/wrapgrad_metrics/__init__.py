"""Built-in plugin: attribution-robustness metrics and attribution attacks.

Metrics (``wrapgrad.metric(name, **params)``):

* map-to-map, ``m(a, b) -> Tensor[B]``: ``topk_intersection`` (IN), ``kendall_tau`` (CO),
  ``spearman_rho``;
* model-based, ``m(model, inputs, target, explain) -> Tensor[B]``: ``sensitivity`` (S_r),
  ``deletion``, ``insertion``, ``sic``, ``aic``, ``ig_saturation``, ``captum_infidelity``,
  ``captum_sensitivity_max``;
* mask-based, ``m(attributions, mask) -> Tensor[B]``: ``localisation_auc``.

Attacks (``wrapgrad.attack(name, **params)``, ``a(model, inputs, target, explain)`` ->
:class:`~wrapgrad.evaluation.AttackResult`): ``ifia``, ``adversarial_ifia``.

Every Quantus metric is registered too, by the ``wrapgrad_quantus`` plugin.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from wrapgrad import hookimpl
from wrapgrad.records import AttackSpec, MetricSpec


@hookimpl
def wrapgrad_metrics() -> Iterator[MetricSpec]:
    from wrapgrad_metrics.curves import (
        Deletion,
        IGSaturation,
        Insertion,
        PerformanceInformationCurve,
    )
    from wrapgrad_metrics.maps import KendallTau, LocalisationAUC, SpearmanRho, TopKIntersection
    from wrapgrad_metrics.model_based import CaptumInfidelity, CaptumSensitivityMax, Sensitivity

    yield MetricSpec(
        name="topk_intersection",
        factory=TopKIntersection,
        summary="Share of the k most important features two maps share (IN; Ghorbani et al. 2019).",
        higher_is_better=True,
        requires="maps",
    )
    yield MetricSpec(
        name="kendall_tau",
        factory=KendallTau,
        summary="Kendall's tau-b between two maps (CO; as scipy.stats.kendalltau).",
        higher_is_better=True,
        requires="maps",
    )
    yield MetricSpec(
        name="spearman_rho",
        factory=SpearmanRho,
        summary="Spearman's rank correlation between two maps (average ranks).",
        higher_is_better=True,
        requires="maps",
    )
    yield MetricSpec(
        name="localisation_auc",
        factory=LocalisationAUC,
        summary="ROC-AUC of a map against a ground-truth foreground mask (Jha et al. 2022).",
        higher_is_better=True,
        requires="mask",
    )
    yield MetricSpec(
        name="sensitivity",
        factory=Sensitivity,
        summary="S_r: largest relative map change in an l_inf ball keeping the label (Jha et al.).",
        higher_is_better=False,
        requires="model",
        smoke={"steps": 2, "restarts": 1, "spsa_samples": 2},  # what a --smoke run keeps
    )
    yield MetricSpec(
        name="deletion",
        factory=Deletion,
        summary="Area under the deletion curve (MoRF default; LeRF with order='lerf').",
        higher_is_better=False,
        requires="model",
        smoke={"n_steps": 4},  # what a --smoke run keeps
    )
    yield MetricSpec(
        name="insertion",
        factory=Insertion,
        summary="Area under the insertion curve (MoRF default; LeRF with order='lerf').",
        higher_is_better=True,
        requires="model",
        smoke={"n_steps": 4},  # what a --smoke run keeps
    )
    yield MetricSpec(
        name="sic",
        factory=partial(PerformanceInformationCurve, "sic"),
        summary="Area under the softmax-information curve (Kapishnikov et al. 2019).",
        higher_is_better=True,
        requires="model",
    )
    yield MetricSpec(
        name="aic",
        factory=partial(PerformanceInformationCurve, "aic"),
        summary="Area under the accuracy-information curve (Kapishnikov et al. 2019).",
        higher_is_better=True,
        requires="model",
    )
    yield MetricSpec(
        name="ig_saturation",
        factory=IGSaturation,
        summary="Share of IG path gradient mass after the logit saturates (Jha et al. 2022).",
        higher_is_better=False,
        requires="model",
        smoke={"n_steps": 4},  # what a --smoke run keeps
    )
    yield MetricSpec(
        name="captum_infidelity",
        factory=CaptumInfidelity,
        summary="captum.metrics.infidelity with seeded Gaussian perturbations (Yeh et al. 2019).",
        higher_is_better=False,
        requires="model",
        smoke={"n_perturb_samples": 2},  # what a --smoke run keeps
    )
    yield MetricSpec(
        name="captum_sensitivity_max",
        factory=CaptumSensitivityMax,
        summary="captum.metrics.sensitivity_max with seeded uniform perturbations (Yeh et al.).",
        higher_is_better=False,
        requires="model",
        smoke={"n_perturb_samples": 2},  # what a --smoke run keeps
    )


@hookimpl
def wrapgrad_attacks() -> Iterator[AttackSpec]:
    from wrapgrad_metrics.attacks import IFIA, AdversarialIFIA

    yield AttackSpec(
        name="ifia",
        factory=IFIA,
        summary="Iterative feature-importance attack: top-k, mass-center, targeted (FAR Alg. 1).",
        smoke={"steps": 2, "restarts": 1, "spsa_samples": 2},  # what a --smoke run keeps
    )
    yield AttackSpec(
        name="adversarial_ifia",
        factory=AdversarialIFIA,
        summary="Adversarial IFIA: cross-entropy + lambda * map dissimilarity (FAR Alg. 2).",
        smoke={"steps": 2, "restarts": 1, "spsa_samples": 2},  # what a --smoke run keeps
    )
