"""Captum layer and neuron maps keep no autograd graph, whether the explainer is called directly
(``build_explainer``, a registry factory, :class:`CaptumExplainer`) or through ``wrap``; only
``create_graph=True`` (the differentiable kernels) returns maps with a graph."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from captum.attr import LayerGradCam

import wrapgrad
from wrapgrad.captum_adapter import CaptumExplainer
from wrapgrad.errors import WrapgradValueError
from wrapgrad.functional import FunctionalView
from wrapgrad.registry import get_registry
from wrapgrad.wrapping import build_explainer

# Methods whose Captum maps are built from the forward pass's activations (before the fix they
# came back with a grad_fn to the parameters), plus one that never had a graph.
LAYER_CASES = [
    ("layer_grad_cam", "features.2", {}),
    ("layer_conductance", "features.2", {"n_steps": 3}),
    ("layer_gradient_x_activation", "features.2", {}),
    ("layer_deep_lift", "features.2", {}),
    ("layer_activation", "features.2", {}),
    ("internal_influence", "features.2", {"n_steps": 3}),
    ("layer_integrated_gradients", "features.0", {"n_steps": 3}),
]


def _target(name: str) -> int | None:
    return None if name == "layer_activation" else 1


def _maps(out: object) -> list[torch.Tensor]:
    items = out if isinstance(out, (tuple, list)) else (out,)
    assert items
    assert all(isinstance(t, torch.Tensor) for t in items)
    return list(items)


def _no_graph(out: object) -> None:
    for t in _maps(out):
        assert not t.requires_grad
        assert t.grad_fn is None


@pytest.mark.parametrize(("name", "layer", "options"), LAYER_CASES)
def test_direct_layer_call_returns_detached_maps(cnn, images, name, layer, options) -> None:
    explainer = build_explainer(name, layer=layer)
    _no_graph(explainer(cnn, images, _target(name), **options))
    # The registry's factory, as a plugin or the pipeline gets it.
    spec = get_registry().get("explainer", name)
    _no_graph(spec.factory(layer=layer)(cnn, images, _target(name), **options))


@pytest.mark.parametrize(("name", "layer", "options"), LAYER_CASES[:3])
def test_layer_maps_through_wrap_are_detached(cnn, images, name, layer, options) -> None:
    _no_graph(wrapgrad.wrap(cnn, name, layer=layer, **options)(images, _target(name)))


def test_detached_with_inputs_that_require_grad_and_interpolation(cnn, images) -> None:
    x = images.clone().requires_grad_(True)
    explainer = CaptumExplainer(LayerGradCam, layer="features.2", interpolate=True)
    maps = explainer(cnn, x, 2)
    assert maps.shape == (4, 1, 8, 8)
    _no_graph(maps)
    assert x.grad is None
    assert x.requires_grad


def test_constructed_captum_object_and_convergence_delta(cnn, images) -> None:
    obj = LayerGradCam(cnn, cnn.features[2])
    _no_graph(CaptumExplainer(obj)(cnn, images, 0))
    # Re-pointed at a functional view of the model (as the enhancers call it).
    view = FunctionalView(cnn, {"features.0.bias": cnn.features[0].bias + 0.1})
    _no_graph(CaptumExplainer(obj)(view, images, 0))
    maps, delta = build_explainer("layer_conductance", layer="features.2")(
        cnn, images, 1, n_steps=3, return_convergence_delta=True
    )
    _no_graph((maps, delta))


def test_direct_maps_do_not_keep_the_activations_alive(cnn, images) -> None:
    """The point of detaching: no map holds the forward pass's activations."""
    seen: list[weakref.ref[torch.Tensor]] = []
    handle = cnn.features[1].register_forward_hook(lambda m, i, o: seen.append(weakref.ref(o)))
    try:
        maps = build_explainer("layer_grad_cam", layer="features.2")(cnn, images, 1)
    finally:
        handle.remove()
    gc.collect()
    assert seen
    assert all(ref() is None for ref in seen)
    _no_graph(maps)


def test_create_graph_to_a_captum_explainer_is_refused_by_name(cnn, images) -> None:
    explainer = build_explainer("layer_grad_cam", layer="features.2")
    with pytest.raises(WrapgradValueError, match="create_graph"):
        explainer(cnn, images, 1, create_graph=True)
    _no_graph(explainer(cnn, images, 1, create_graph=False))
    with pytest.raises(WrapgradValueError, match="create_graph: layer methods"):
        wrapgrad.wrap(cnn, "layer_grad_cam", layer="features.2", create_graph=True)


@pytest.mark.parametrize("enhancer", [None, "smoothgrad"])
def test_create_graph_path_still_keeps_a_graph(cnn, images, enhancer) -> None:
    x = images.clone().requires_grad_(True)
    options = {"n_samples": 2, "noise_level": 0.1, "seed": 0} if enhancer else {}
    maps = wrapgrad.wrap(cnn, "saliency", enhancer, create_graph=True, **options)(x, target=1)
    assert maps.requires_grad
    assert maps.grad_fn is not None
    # A ReLU net's saliency is piecewise constant in x: the graph shows in the parameters.
    params = [p for p in cnn.parameters() if p.requires_grad]
    grads = torch.autograd.grad(maps.pow(2).sum(), params, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    plain = wrapgrad.wrap(cnn, "saliency", enhancer, **options)(images, target=1)
    _no_graph(plain)
