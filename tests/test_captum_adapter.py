"""Every applicable Captum method through ``wrap()`` equals calling Captum directly."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch
from captum import attr as ca
from torch import nn

import wrapgrad
from wrapgrad.captum_adapter import captum_classes, snake_case

from ._transformers import tiny_bert
from .conftest import MultiInputNet, SmallCNN

BASELINES = torch.zeros(3, 1, 8, 8)
LAYER_MASK = torch.arange(6).reshape(1, 6, 1, 1).expand(1, 6, 8, 8) // 2  # 3 groups of channels
FEATURE_MASK = (torch.arange(64).reshape(1, 1, 8, 8) // 16).expand(4, 1, 8, 8).contiguous()

# name -> (wrap options, attribute kwargs). Layer methods use the second conv; neuron methods its
# first channel at the centre.
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "saliency": ({}, {}),
    "integrated_gradients": ({}, {"n_steps": 16}),
    "input_x_gradient": ({}, {}),
    "deep_lift": ({}, {}),
    "deep_lift_shap": ({}, {"baselines": BASELINES}),
    "gradient_shap": ({}, {"baselines": BASELINES, "n_samples": 4}),
    "guided_backprop": ({}, {}),
    "deconvolution": ({}, {}),
    "guided_grad_cam": ({"layer": "features.2"}, {}),
    "lrp": ({}, {}),
    "occlusion": ({}, {"sliding_window_shapes": (1, 3, 3), "strides": 2}),
    "feature_ablation": ({}, {"feature_mask": FEATURE_MASK}),
    "feature_permutation": ({}, {"feature_mask": FEATURE_MASK}),
    "shapley_value_sampling": ({}, {"feature_mask": FEATURE_MASK, "n_samples": 3}),
    "shapley_values": ({}, {"feature_mask": FEATURE_MASK}),
    "lime": ({}, {"feature_mask": FEATURE_MASK, "n_samples": 20}),
    "kernel_shap": ({}, {"feature_mask": FEATURE_MASK, "n_samples": 20}),
    "layer_activation": ({"layer": "features.2"}, {}),
    "layer_conductance": ({"layer": "features.2"}, {"n_steps": 8}),
    "layer_deep_lift": ({"layer": "features.2"}, {}),
    "layer_deep_lift_shap": ({"layer": "features.2"}, {"baselines": BASELINES}),
    "layer_feature_ablation": ({"layer": "features.2"}, {"layer_mask": LAYER_MASK}),
    "layer_feature_permutation": ({"layer": "features.2"}, {"layer_mask": LAYER_MASK}),
    "layer_grad_cam": ({"layer": "features.2"}, {}),
    "layer_gradient_shap": ({"layer": "features.2"}, {"baselines": BASELINES, "n_samples": 4}),
    "layer_gradient_x_activation": ({"layer": "features.2"}, {}),
    "layer_integrated_gradients": ({"layer": "features.2"}, {"n_steps": 8}),
    "layer_lrp": ({"layer": "features.2"}, {}),
    "internal_influence": ({"layer": "features.2"}, {"n_steps": 8}),
    "neuron_conductance": ({"layer": "features.2"}, {"neuron_selector": (0, 4, 4), "n_steps": 8}),
    "neuron_deconvolution": ({"layer": "features.2"}, {"neuron_selector": (0, 4, 4)}),
    "neuron_deep_lift": ({"layer": "features.2"}, {"neuron_selector": (0, 4, 4)}),
    "neuron_deep_lift_shap": (
        {"layer": "features.2"},
        {"neuron_selector": (0, 4, 4), "baselines": BASELINES},
    ),
    "neuron_feature_ablation": ({"layer": "features.2"}, {"neuron_selector": (0, 4, 4)}),
    "neuron_gradient": ({"layer": "features.2"}, {"neuron_selector": (0, 4, 4)}),
    "neuron_gradient_shap": (
        {"layer": "features.2"},
        {"neuron_selector": (0, 4, 4), "baselines": BASELINES, "n_samples": 4},
    ),
    "neuron_guided_backprop": ({"layer": "features.2"}, {"neuron_selector": (0, 4, 4)}),
    "neuron_integrated_gradients": ({"layer": "features.2"}, {"neuron_selector": (0, 4, 4)}),
}

# Captum 0.9's LayerFeaturePermutation fails on any target for a classifier ("Output must be 2D":
# it selects the target twice). wrapgrad selects it in the forward function, as Captum advises at
# _select_targets; the direct call does the same by hand.
TARGET_IN_FORWARD = {"layer_feature_permutation"}


def test_every_captum_method_is_covered() -> None:
    assert set(CASES) == set(captum_classes()), "a Captum class is neither tested nor excluded"


def _seed_everything(seed: int) -> None:
    # Captum draws from torch, numpy (GradientShap's baseline choice) and random.
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _captum_direct(name: str, model: nn.Module, x: torch.Tensor, target: Any) -> Any:
    cls = captum_classes()[name]
    opts, kwargs = CASES[name]
    layer = opts.get("layer")
    forward: Any = model
    if name in TARGET_IN_FORWARD and target is not None:
        index = target.reshape(-1, 1)
        forward, target = (lambda x: model(x).gather(1, index)[:, 0]), None
    obj = cls(forward, model.get_submodule(layer)) if layer else cls(forward)
    if target is None:
        return obj.attribute(x, **kwargs)
    return obj.attribute(x, target=target, **kwargs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_wrap_equals_captum(name: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    model = SmallCNN().eval()
    opts, kwargs = CASES[name]
    explain = wrapgrad.wrap(model, name, guard="verify", **opts)
    target = labels if explain.traits.takes_target else None
    _seed_everything(123)
    got = explain(images.clone(), target=target, **kwargs)
    _seed_everything(123)
    want = _captum_direct(name, model, images.clone(), target)
    assert type(got) is type(want)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    if explain.family == "attribution":
        assert got.shape == images.shape
        assert got.device == images.device


def test_layer_feature_permutation_explains_a_target(images: torch.Tensor, labels) -> None:
    """Captum 0.9 fails on a target (the reason for the adapter's workaround); through wrap()
    the maps are the target's, and the class and object forms agree."""
    model = SmallCNN().eval()
    layer = model.get_submodule("features.2")
    with pytest.raises(AssertionError, match="Output must be 2D"):
        ca.LayerFeaturePermutation(model, layer).attribute(images, target=labels)
    _seed_everything(0)
    by_name = wrapgrad.wrap(model, "layer_feature_permutation", layer="features.2")(
        images, target=labels
    )
    _seed_everything(0)
    by_object = wrapgrad.wrap(model, ca.LayerFeaturePermutation(model, layer))(
        images, target=labels
    )
    torch.testing.assert_close(by_object, by_name, rtol=0, atol=0)
    _seed_everything(0)
    other = wrapgrad.wrap(model, "layer_feature_permutation", layer="features.2")(
        images, target=(labels + 1) % 4
    )
    assert not torch.equal(other, by_name)


def test_captum_traits_declare_what_a_call_needs() -> None:
    """Target, baselines and randomness as the Captum classes' signatures and algorithms say
    (the conformance kit builds its calls from these)."""
    from wrapgrad.captum_adapter import method_traits

    traits = {name: method_traits(cls) for name, cls in captum_classes().items()}
    assert not traits["layer_activation"].takes_target  # explains no output
    assert traits["neuron_conductance"].takes_target  # a neuron and a target
    assert not traits["neuron_gradient"].takes_target
    assert traits["layer_grad_cam"].takes_target
    assert traits["saliency"].takes_target
    assert {n for n, t in traits.items() if t.baseline_distribution} == {
        "deep_lift_shap",
        "layer_deep_lift_shap",
        "neuron_deep_lift_shap",
        "gradient_shap",
        "layer_gradient_shap",
        "neuron_gradient_shap",
    }
    # Exact Shapley values enumerate every permutation: deterministic, unlike the sampling one.
    assert not traits["shapley_values"].stochastic
    assert traits["shapley_value_sampling"].stochastic


def test_class_and_object_forms_equal_the_name(cnn, images, labels) -> None:
    by_name = wrapgrad.wrap(cnn, "integrated_gradients", n_steps=10)(images, target=labels)
    by_class = wrapgrad.wrap(cnn, ca.IntegratedGradients, n_steps=10)(images, target=labels)
    by_object = wrapgrad.wrap(cnn, ca.IntegratedGradients(cnn))(images, target=labels, n_steps=10)
    torch.testing.assert_close(by_class, by_name, rtol=0, atol=0)
    torch.testing.assert_close(by_object, by_name, rtol=0, atol=0)
    # Options given to wrap() are defaults that the call can override.
    explain = wrapgrad.wrap(cnn, "integrated_gradients", n_steps=10)
    coarse = explain(images, target=labels, n_steps=2)
    assert not torch.allclose(coarse, by_name)


def test_integrated_gradients_completeness(cnn, images, labels) -> None:
    """IG's attributions sum to f(x) - f(baseline) (Sundararajan et al. 2017, Prop. 1)."""
    explain = wrapgrad.wrap(cnn, "integrated_gradients", n_steps=2000, method="riemann_trapezoid")
    attributions, delta = explain(images, target=labels, return_convergence_delta=True)
    out = cnn(images).gather(1, labels[:, None])[:, 0]
    base = cnn(torch.zeros_like(images)).gather(1, labels[:, None])[:, 0]
    # Up to the discretisation error of the path integral across ReLU kinks.
    torch.testing.assert_close(attributions.sum((1, 2, 3)), out - base, atol=1e-2, rtol=1e-2)
    assert delta.abs().max() < 1e-2


def test_callable_explainer(cnn, images, labels) -> None:
    def grad_x_input(model, inputs, target=None, scale=1.0):
        inputs = inputs.clone().requires_grad_(True)
        out = model(inputs).gather(1, target[:, None]).sum()
        (grad,) = torch.autograd.grad(out, inputs)
        return grad * inputs.detach() * scale

    got = wrapgrad.wrap(cnn, grad_x_input, scale=2.0)(images, target=labels)
    want = wrapgrad.wrap(cnn, "input_x_gradient")(images, target=labels) * 2
    torch.testing.assert_close(got, want)


def test_multi_input_model(images) -> None:
    model = MultiInputNet().eval()
    vec = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    inputs = (images, vec)
    explain = wrapgrad.wrap(model, "integrated_gradients", n_steps=20)
    got = explain(inputs, target=2, additional_forward_args=(3.0,))
    assert isinstance(got, tuple)
    assert [g.shape for g in got] == [images.shape, vec.shape]
    want = ca.IntegratedGradients(model).attribute(
        inputs, target=2, additional_forward_args=(3.0,), n_steps=20
    )
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    baselines = (torch.ones_like(images), torch.zeros_like(vec))
    dl = wrapgrad.wrap(model, "deep_lift")(
        inputs, target=0, baselines=baselines, additional_forward_args=(1.0,)
    )
    assert [d.shape for d in dl] == [images.shape, vec.shape]


class TinyText(nn.Module):
    """A randomly initialised transformer text classifier (no download), logits out."""

    def __init__(self) -> None:
        super().__init__()
        self.bert = tiny_bert()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids).logits


def test_text_model_through_layer_integrated_gradients() -> None:
    model = TinyText().eval()
    ids = torch.tensor([[2, 7, 9, 11, 3], [2, 5, 5, 8, 3]])
    baseline_ids = torch.zeros_like(ids)
    explain = wrapgrad.wrap(
        model, "layer_integrated_gradients", layer="bert.bert.embeddings.word_embeddings"
    )
    attributions, delta = explain(
        ids, target=1, baselines=baseline_ids, n_steps=64, return_convergence_delta=True
    )
    assert attributions.shape == (2, 5, 16)
    want = ca.LayerIntegratedGradients(model, model.bert.bert.embeddings.word_embeddings).attribute(
        ids, target=1, baselines=baseline_ids, n_steps=64
    )
    torch.testing.assert_close(attributions, want, rtol=0, atol=0)
    # Completeness: per-token attributions sum to the logit difference.
    logit = model(ids)[:, 1] - model(baseline_ids)[:, 1]
    torch.testing.assert_close(attributions.sum((1, 2)), logit, atol=2e-2, rtol=2e-2)
    assert delta.abs().max() < 2e-2


def test_layer_methods_interpolate_and_layer_lists(cnn, images, labels) -> None:
    small = wrapgrad.wrap(cnn, "layer_grad_cam", layer=cnn.features[2])(images, target=labels)
    assert small.shape == (4, 1, 8, 8)  # padding keeps 8x8: resize a pooled layer instead
    explain = wrapgrad.wrap(cnn, "layer_grad_cam", layer="pool", interpolate="nearest")
    big = explain(images, target=labels)
    raw = ca.LayerGradCam(cnn, cnn.pool).attribute(images, target=labels)
    assert raw.shape == (4, 1, 2, 2)
    assert big.shape == (4, 1, 8, 8)
    torch.testing.assert_close(big, ca.LayerAttribution.interpolate(raw, (8, 8), "nearest"))
    acts = wrapgrad.wrap(cnn, "layer_activation", layer=["features.0", "pool"])(images)
    assert [a.shape for a in acts] == [(4, 4, 8, 8), (4, 6, 2, 2)]


def test_snake_case_names() -> None:
    assert snake_case("IntegratedGradients") == "integrated_gradients"
    assert snake_case("LayerLRP") == "layer_lrp"
    assert snake_case("InputXGradient") == "input_x_gradient"
    assert snake_case("GuidedGradCam") == "guided_grad_cam"
