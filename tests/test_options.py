"""One option router: every option goes to the one part that takes it, collisions raise naming
both parts, and every lookup honours the registry the caller chose."""

from __future__ import annotations

import importlib.metadata as md

import pytest
import torch
from captum.attr import GradientShap

import wrapgrad
from wrapgrad.errors import UnknownNameError
from wrapgrad.options import OptionCollisionError, Part, accepted, route
from wrapgrad.registry import Registry, get_registry, use_registry

from .conftest import SmallCNN


def _registry_of(*names: str) -> Registry:
    """A registry built from only the named built-in entry points."""
    eps = [ep for ep in md.entry_points(group="wrapgrad") if ep.name in names]
    assert sorted(ep.name for ep in eps) == sorted(names)
    return Registry(entry_points=eps)


def test_accepted_reads_keyword_parameters_once() -> None:
    def f(model, inputs, target=None, *, n_steps: int = 5, **kw):
        return inputs

    names, open_ = accepted(f)
    assert names == {"model", "inputs", "target", "n_steps"}
    assert open_

    class C:
        def __init__(self, a: int, *, b: int = 0) -> None: ...

    assert accepted(C) == (frozenset({"a", "b"}), False)


def test_route_sends_each_option_to_its_part_and_refuses_collisions() -> None:
    parts = [Part("enhancer", {"n_samples", "seed"}), Part("method", {"n_samples", "stdevs"})]
    with pytest.raises(OptionCollisionError, match=r"^n_samples: both enhancer and method take"):
        route({"n_samples": 3}, parts)
    routed = route({"seed": 1, "stdevs": 0.5}, parts, explicit={"method": {"n_samples": 7}})
    assert routed == {"enhancer": {"seed": 1}, "method": {"n_samples": 7, "stdevs": 0.5}}
    with pytest.raises(UnknownNameError, match=r"did you mean 'stdevs'"):
        route({"stdev": 0.5}, parts)
    # A part with **kwargs takes what nobody names; a named parameter still wins.
    open_parts = [Part("a", {"x"}), Part("b", set(), open=True)]
    assert route({"x": 1, "y": 2}, open_parts) == {"a": {"x": 1}, "b": {"y": 2}}


def test_gradient_shap_and_smoothgrad_collide_on_n_samples_naming_both() -> None:
    model = SmallCNN().eval()
    with pytest.raises(OptionCollisionError) as info:
        wrapgrad.wrap(model, "gradient_shap", enhancer="smoothgrad", n_samples=3)
    message = str(info.value)
    assert "enhancer 'smoothgrad'" in message
    assert "method 'gradient_shap'" in message
    assert "method_options" in message
    # The same collision through a Captum class is caught too.
    with pytest.raises(OptionCollisionError, match="method 'gradient_shap'"):
        wrapgrad.wrap(model, GradientShap, enhancer="smoothgrad", n_samples=3)


def test_explicit_method_and_enhancer_options_resolve_the_collision() -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    baselines = torch.zeros(3, 1, 8, 8)
    explain = wrapgrad.wrap(
        model,
        "gradient_shap",
        enhancer="smoothgrad",
        method_options={"n_samples": 5},
        enhancer_options={"n_samples": 2},
        seed=0,
    )
    assert explain.enhancer.n_samples == 2
    assert explain.explainer.attribute_defaults["n_samples"] == 5
    assert explain(x, target=1, baselines=baselines).shape == x.shape
    with pytest.raises(wrapgrad.WrapgradValueError, match=r"^n_samples: given both"):
        wrapgrad.wrap(
            model,
            "gradient_shap",
            enhancer="smoothgrad",
            n_samples=2,
            enhancer_options={"n_samples": 2},
        )


def test_unknown_options_keep_their_suggestions() -> None:
    model = SmallCNN().eval()
    with pytest.raises(UnknownNameError, match=r"did you mean 'n_samples'"):
        wrapgrad.wrap(model, "saliency", enhancer="smoothgrad", n_sample=3)
    with pytest.raises(UnknownNameError, match=r"did you mean 'n_steps'"):
        wrapgrad.wrap(model, "integrated_gradients", n_step=3)


def test_a_registry_without_calibrators_makes_auto_levels_fail_on_every_path() -> None:
    model = SmallCNN().eval()
    data = (torch.randn(8, 1, 8, 8), torch.arange(8) % 4)
    bare = _registry_of("captum", "noise")
    assert "accuracy_drop" in get_registry().names("calibrator")
    with pytest.raises(UnknownNameError, match=r"^calibrator: unknown calibrator 'accuracy_drop'"):
        wrapgrad.wrap(
            model,
            "saliency",
            enhancer="noisegrad",
            sigma="auto",
            calibration=data,
            registry=bare,
        )
    with use_registry(bare), pytest.raises(UnknownNameError, match="calibrator"):
        wrapgrad.wrap(model, "saliency", enhancer="noisegrad", sigma="auto", calibration=data)
    with pytest.raises(UnknownNameError, match="calibrator"):
        wrapgrad.calibrate(model, data, registry=bare)
    # And the names the bare registry lacks are not found through the global one either.
    with pytest.raises(UnknownNameError, match="metric"):
        wrapgrad.metric("topk_intersection", registry=bare)
    with pytest.raises(UnknownNameError, match="dataset"):
        wrapgrad.load_dataset("digits8x8", registry=bare)


def test_use_registry_is_per_context_and_restored() -> None:
    outer = get_registry()
    bare = _registry_of("captum")
    with use_registry(bare):
        assert get_registry() is bare
        with use_registry(None):  # None keeps the current one
            assert get_registry() is bare
    assert get_registry() is outer
    with (
        pytest.raises(wrapgrad.WrapgradTypeError, match=r"^registry:"),
        use_registry("captum"),  # type: ignore[arg-type]
    ):
        pass
