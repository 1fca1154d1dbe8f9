"""Every registered built-in component passes the conformance kit (``wrapgrad.testing``).

The components are whatever the built-in plugins register (a registry without third-party
entry points): no hand-kept list. Two tables below are kept by hand, each entry with its
reason: options the kit cannot guess for a few components, and the checks a built-in is known
to fail (``xfail(strict=True)``: a fix makes the entry an error until it is removed).
"""

from __future__ import annotations

import pytest

from wrapgrad.records import KINDS
from wrapgrad.registry import Registry
from wrapgrad.testing import Component, checks_for, parametrize_with_checks

# Captum's advice to explain one example at a time (Lime, KernelShap on the probe batch).
pytestmark = pytest.mark.filterwarnings("ignore:You are providing multiple inputs:UserWarning")

#: Options the kit cannot guess, by component.
OPTIONS: dict[str, dict[str, object]] = {
    # Attributes to the inputs (family "attribution") but through a layer's Grad-CAM.
    "explainer:guided_grad_cam": {"layer": "features.0"},
    # With its smoke cap (4 samples) Lime's lasso fit gives all-zero maps on the probe.
    "explainer:lime": {"n_samples": 8},
    # Quantus draws random classes in [0, num_classes), 1000 by default; the probe has 3.
    "metric:quantus_random_logit": {"num_classes": 3},
    # Quantus' default k = 1000 features; the probe's maps have 64.
    "metric:quantus_top_k_intersection": {"k": 8},
}

#: Known failures: component -> {check: reason}, or -> reason for every check that calls it.
EXPECTED: dict[str, dict[str, str] | str] = {
    "explainer:layer_activation": (
        "LayerActivation explains no output and refuses a target; the kit calls layer methods "
        "with one, and ExplainerTraits cannot declare 'takes no target'"
    ),
    "explainer:neuron_conductance": (
        "NeuronConductance needs a target besides neuron_selector; the neuron family's contract "
        "(ExplainerTraits.family) is neuron_selector instead of target"
    ),
    "explainer:layer_feature_permutation": (
        "Captum 0.9's LayerFeaturePermutation fails for any target on a classifier "
        "(docs/architecture.md, Known limits)"
    ),
    "explainer:shapley_values": {
        "check_explainer_seed": (
            "exact Shapley values enumerate every permutation: deterministic, but the Captum "
            "adapter declares the method stochastic (harmless: the engine only seeds the global "
            "generators for it)"
        ),
    },
    **{
        f"explainer:{name}": {
            "check_explainer_batch_independence": (
                "Captum's DeepLiftShap family needs a baseline distribution of more than one "
                "example; the per-sample calls give one"
            )
        }
        for name in ("deep_lift_shap", "layer_deep_lift_shap", "neuron_deep_lift_shap")
    },
    "metric:quantus_batch_sufficiency": (
        "Quantus reshapes the batch's maps to one sample's shape and fails on a batch of three"
    ),
    "metric:quantus_focus": (
        "Quantus' Focus needs mosaic inputs (custom_batch) that the model-metric call form "
        "(model, inputs, target, explain) does not carry"
    ),
    "metric:quantus_input_invariance": (
        "Quantus' InputInvariance reads out_channels of the model's first child module, which "
        "must be a convolution"
    ),
    "metric:quantus_irof": "Quantus' IROF calls numpy.trapz, which NumPy 2 removed",
    **{
        f"metric:quantus_{name}": dict.fromkeys(
            ("check_metric_scores", "check_metric_repeatable", "check_metric_model_unchanged"),
            f"the bridge passes Quantus' {what} through instead of one score per sample "
            "(the Metric protocol's Tensor[B])",
        )
        for name, what in [
            ("pixel_flipping", "per-sample curve (an ndarray (B, steps))"),
            ("region_perturbation", "per-sample curve (an ndarray)"),
            ("selectivity", "per-sample curve (an ndarray)"),
            ("sensitivity_n", "per-sample curve (an ndarray)"),
            ("mprt", "dict of scores per layer"),
            ("smooth_mprt", "dict of scores per layer"),
            ("model_parameter_randomisation", "dict of scores per layer"),
            ("road", "dict of curves per percentage"),
        ]
    },
}


#: Checks that build a component but never call it.
_NO_CALL = ("check_spec", "check_builds", "check_explainer_traits")


def _builtins() -> list[Component]:
    registry = Registry(autoload=False)  # the wrapgrad distribution's own entry points only
    return [
        Component(spec=spec, options=OPTIONS.get(f"{kind}:{name}", {}))
        for kind in KINDS
        for name, spec in registry.specs(kind).items()
    ]


def _expected(component: Component) -> dict[str, str]:
    entry = EXPECTED.get(component.key, {})
    if isinstance(entry, str):
        return {c.name: entry for c in checks_for(component) if c.name not in _NO_CALL}
    return entry


COMPONENTS = _builtins()


def test_every_kind_with_components_is_checked() -> None:
    kinds = {c.kind for c in COMPONENTS}
    assert {"explainer", "enhancer", "perturber", "metric", "attack", "dataset"} <= kinds
    assert all(checks_for(c) for c in COMPONENTS)
    assert set(OPTIONS) <= {c.key for c in COMPONENTS}
    assert set(EXPECTED) <= {c.key for c in COMPONENTS}


@parametrize_with_checks(COMPONENTS, expected_failed_checks=_expected)
def test_builtin_conformance(component: Component, check) -> None:  # type: ignore[no-untyped-def]
    check(component)
