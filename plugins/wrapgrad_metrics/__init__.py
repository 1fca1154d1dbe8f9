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

from functools import partial

from wrapgrad import hookimpl
from wrapgrad.records import AttackSpec, MetricSpec

#: What a ``--smoke`` run keeps of an attack-style search (the attacks and S_r run one).
_SEARCH_SMOKE = {"steps": 2, "restarts": 1, "spsa_samples": 2}
#: What a ``--smoke`` run keeps of a curve or path with ``n_steps`` points.
_CURVE_SMOKE = {"n_steps": 4}
#: What a ``--smoke`` run keeps of a Captum metric's perturbation samples.
_CAPTUM_SMOKE = {"n_perturb_samples": 2}


@hookimpl
def wrapgrad_metrics() -> list[MetricSpec]:
    from wrapgrad_metrics.curves import (
        Deletion,
        IGSaturation,
        Insertion,
        PerformanceInformationCurve,
    )
    from wrapgrad_metrics.maps import KendallTau, LocalisationAUC, SpearmanRho, TopKIntersection
    from wrapgrad_metrics.model_based import CaptumInfidelity, CaptumSensitivityMax, Sensitivity

    # smoke: the caps of what a --smoke run keeps
    return MetricSpec.from_rows("name factory higher_is_better requires smoke summary", (
        ("topk_intersection", TopKIntersection, True, "maps", {},
         "Share of the k most important features two maps share (IN; Ghorbani et al. 2019)."),
        ("kendall_tau", KendallTau, True, "maps", {},
         "Kendall's tau-b between two maps (CO; as scipy.stats.kendalltau)."),
        ("spearman_rho", SpearmanRho, True, "maps", {},
         "Spearman's rank correlation between two maps (average ranks)."),
        ("localisation_auc", LocalisationAUC, True, "mask", {},
         "ROC-AUC of a map against a ground-truth foreground mask (Jha et al. 2022)."),
        ("sensitivity", Sensitivity, False, "model", _SEARCH_SMOKE,
         "S_r: largest relative map change in an l_inf ball keeping the label (Jha et al.)."),
        ("deletion", Deletion, False, "model", _CURVE_SMOKE,
         "Area under the deletion curve (MoRF default; LeRF with order='lerf')."),
        ("insertion", Insertion, True, "model", _CURVE_SMOKE,
         "Area under the insertion curve (MoRF default; LeRF with order='lerf')."),
        ("sic", partial(PerformanceInformationCurve, "sic"), True, "model", {},
         "Area under the softmax-information curve (Kapishnikov et al. 2019)."),
        ("aic", partial(PerformanceInformationCurve, "aic"), True, "model", {},
         "Area under the accuracy-information curve (Kapishnikov et al. 2019)."),
        ("ig_saturation", IGSaturation, False, "model", _CURVE_SMOKE,
         "Share of IG path gradient mass after the logit saturates (Jha et al. 2022)."),
        ("captum_infidelity", CaptumInfidelity, False, "model", _CAPTUM_SMOKE,
         "captum.metrics.infidelity with seeded Gaussian perturbations (Yeh et al. 2019)."),
        ("captum_sensitivity_max", CaptumSensitivityMax, False, "model", _CAPTUM_SMOKE,
         "captum.metrics.sensitivity_max with seeded uniform perturbations (Yeh et al.)."),
    ))  # fmt: skip


@hookimpl
def wrapgrad_attacks() -> list[AttackSpec]:
    from wrapgrad_metrics.attacks import IFIA, AdversarialIFIA

    return AttackSpec.from_rows("name factory summary", (
        ("ifia", IFIA,
         "Iterative feature-importance attack: top-k, mass-center, targeted (FAR Alg. 1)."),
        ("adversarial_ifia", AdversarialIFIA,
         "Adversarial IFIA: cross-entropy + lambda * map dissimilarity (FAR Alg. 2)."),
    ), smoke=_SEARCH_SMOKE)  # fmt: skip
