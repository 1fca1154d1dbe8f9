"""The model is never mutated, and bad input gets errors that name the argument."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import wrapgrad
from wrapgrad.checks import check_finite
from wrapgrad.errors import (
    ModelMutatedError,
    UnknownNameError,
    WrapgradError,
    WrapgradTypeError,
    WrapgradValueError,
)
from wrapgrad.functional import FunctionalView, ModelGuard, ModelSnapshot

from .conftest import SmallCNN


def _state(model: nn.Module) -> dict:
    return {
        "params": {k: v.detach().clone() for k, v in model.named_parameters()},
        "ids": {k: id(v) for k, v in model.named_parameters()},
        "buffers": {k: v.clone() for k, v in model.named_buffers()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
        "grads": [p.grad for p in model.parameters()],
    }


def _assert_same(before: dict, model: nn.Module) -> None:
    after = _state(model)
    assert after["ids"] == before["ids"]
    for k, v in before["params"].items():
        assert v.dtype == after["params"][k].dtype, k
        assert torch.equal(v, after["params"][k]), k
    for k, v in before["buffers"].items():
        assert v.dtype == after["buffers"][k].dtype, k
        assert torch.equal(v, after["buffers"][k]), k
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["hooks"] == before["hooks"]
    assert all(g is None for g in after["grads"])


class BNNet(SmallCNN):
    """With BatchNorm (buffers) and a frozen parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(6)
        self.features[0].bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.bn(self.features(x))).flatten(1))


@pytest.mark.parametrize(
    "name", ["saliency", "integrated_gradients", "deep_lift", "guided_backprop", "lrp"]
)
@pytest.mark.parametrize("train_mode", [False, True])
def test_model_bitwise_unchanged_after_success(name, train_mode, images, labels) -> None:
    model = BNNet().train(train_mode)
    if name == "lrp":
        model = SmallCNN().train(train_mode)
    before = _state(model)
    wrapgrad.wrap(model, name, guard="verify")(images, target=labels)
    _assert_same(before, model)


def test_model_restored_after_a_call_that_raises(images, labels) -> None:
    model = BNNet().train()
    before = _state(model)

    def vandal(model, inputs, target=None):
        model.eval()
        model.features[0].weight.data.mul_(2)  # an in-place edit behind autograd's back
        model.features[0].bias.requires_grad_(True)
        model.features[2].register_forward_hook(lambda *a: None)
        model(inputs).sum().backward()  # fills .grad and updates BatchNorm's running stats
        raise RuntimeError("explainer failed mid-way")

    # Writes through .data bypass the version counter: the full value snapshot catches them.
    with pytest.raises(RuntimeError, match="mid-way"):
        wrapgrad.wrap(model, vandal, guard="restore")(images, target=labels)
    _assert_same(before, model)


def test_captum_method_failing_midway_leaves_no_hooks(images, labels) -> None:
    model = BNNet().eval()
    before = _state(model)
    calls = {"n": 0}

    def fail_on_second_forward(module, args, output):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom inside DeepLift")

    handle = model.classifier.register_forward_hook(fail_on_second_forward)
    before = _state(model)
    with pytest.raises(RuntimeError, match="boom"):
        wrapgrad.wrap(model, "deep_lift", validate=False)(images, target=labels)
    _assert_same(before, model)  # DeepLift's own ReLU hooks were removed by the guard
    handle.remove()


def test_guard_modes(images) -> None:
    model = SmallCNN()

    def mutate(model, inputs, target=None):
        with torch.no_grad():
            model.classifier[0].bias.add_(1.0)
        return inputs

    before = _state(model)
    # The default guard holds no copy: it sees the in-place write and says it cannot undo it.
    saved = model.classifier[0].bias.detach().clone()
    with pytest.raises(ModelMutatedError, match=r"could not be restored.*classifier\.0\.bias"):
        wrapgrad.wrap(model, mutate)(images)
    with torch.no_grad():
        model.classifier[0].bias.copy_(saved)  # undo by hand (the default guard could not)
    _assert_same(before, model)
    with pytest.warns(wrapgrad.WrapgradWarning, match=r"classifier\.0\.bias changed value"):
        wrapgrad.wrap(model, mutate, guard="restore")(images)
    _assert_same(before, model)
    with pytest.raises(ModelMutatedError, match=r"classifier\.0\.bias"):
        wrapgrad.wrap(model, mutate, guard="verify")(images)
    _assert_same(before, model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wrapgrad.wrap(model, mutate, guard="silent")(images)
    _assert_same(before, model)


def test_snapshot_detects_replaced_parameters_and_dtype_changes() -> None:
    model = SmallCNN()
    snap = ModelSnapshot(model)
    original = model.classifier[2].weight
    model.classifier[2].weight = nn.Parameter(original.detach() + 1)
    model.double()
    diffs = snap.differences()
    assert any("replaced" in d for d in diffs)
    snap.restore()
    assert model.classifier[2].weight is original
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert snap.differences() == []


def test_functional_view_uses_other_weights_without_touching_the_model(images) -> None:
    model = SmallCNN().eval()
    before = _state(model)
    doubled = {k: v * 2 for k, v in model.named_parameters()}
    with ModelGuard(model, mode="verify"):
        out = FunctionalView(model, doubled)(images)
        again = FunctionalView(model)(images)
    twin = SmallCNN().eval()
    twin.load_state_dict(doubled)
    torch.testing.assert_close(out, twin(images))
    torch.testing.assert_close(again, model(images))
    _assert_same(before, model)


# -- bad input -----------------------------------------------------------------------------------


def test_errors_are_wrapgrad_errors_and_builtin_types() -> None:
    assert issubclass(WrapgradValueError, (WrapgradError, ValueError))
    assert issubclass(WrapgradTypeError, (WrapgradError, TypeError))
    assert issubclass(UnknownNameError, (ValueError, LookupError))


@pytest.mark.parametrize(
    ("inputs", "kind", "pattern"),
    [
        ([[1.0, 2.0]], WrapgradTypeError, r"inputs: expected a torch.Tensor"),
        (
            torch.ones(2, 1, 8, 8, dtype=torch.long),
            WrapgradTypeError,
            r"inputs: .*floating-point.*int64",
        ),
        (torch.tensor(1.0), WrapgradValueError, r"inputs: .*at least 1 dimension"),
        (torch.empty(0, 1, 8, 8), WrapgradValueError, r"inputs: .*empty batch"),
        (
            torch.ones(2, 3, 8, 8),
            WrapgradValueError,
            r"inputs: the model could not run.*\(2, 3, 8, 8\)",
        ),
        (
            torch.ones(2, 1, 8, 8, device="meta"),
            WrapgradValueError,
            r"inputs: .*model's device cpu.*meta",
        ),
    ],
)
def test_bad_inputs(cnn, inputs, kind, pattern) -> None:
    before = _state(cnn)
    with pytest.raises(kind, match=pattern):
        wrapgrad.wrap(cnn, "saliency")(inputs, target=0)
    _assert_same(before, cnn)


def test_nan_and_inf_inputs_are_refused(cnn, images) -> None:
    bad = images.clone()
    bad[0, 0, 1, 1] = float("nan")
    bad[1, 0, 2, 2] = float("inf")
    with pytest.raises(
        WrapgradValueError, match=r"inputs: expected finite values, got 1 NaN and 1 inf"
    ):
        wrapgrad.wrap(cnn, "saliency")(bad, target=0)
    with pytest.raises(WrapgradValueError, match=r"baselines: expected finite"):
        wrapgrad.wrap(cnn, "integrated_gradients")(images, target=0, baselines=bad)


def test_finite_check_is_exact_where_a_sum_overflows_or_cancels() -> None:
    big = torch.full((4,), 3.0e38)  # finite entries whose float32 sum overflows to inf
    check_finite(big, "inputs")
    check_finite(torch.zeros(2, 3, dtype=torch.complex64), "inputs")
    cases = [
        ([1.0, float("inf"), float("-inf")], 0, 2),  # the sum is NaN
        ([float("nan"), 1.0], 1, 0),
        ([3.0e38, 3.0e38, float("-inf")], 0, 1),  # the sum overflows before the -inf
        ([-1.0, float("-inf")], 0, 1),
    ]
    for values, n_nan, n_inf in cases:
        with pytest.raises(
            WrapgradValueError, match=rf"x: expected finite values, got {n_nan} NaN and {n_inf} inf"
        ):
            check_finite(torch.tensor(values), "x")


@pytest.mark.parametrize(
    ("target", "pattern"),
    [
        (4, r"target: index 4 is outside \[0, 4\)"),
        (-1, r"target: index -1 is outside"),
        (torch.tensor([0, 1, 2]), r"target: expected .*tensor of shape \(3,\)"),
        (torch.tensor([0, 1, 2, 9]), r"target: .*entry 3 is \[9\]"),
        (torch.tensor([0.0, 1.0, 2.0, 3.0]), r"target: expected integer class indices"),
        ([0, 1], r"target: expected a list of 4 targets"),
        ([0, 1, 2, 7], r"target\[3\]: index 7 is outside"),
        ((1, 2), r"target: \(1, 2\) has 2 indices"),
        ("cat", r"target: expected an int or a tuple"),
    ],
)
def test_bad_targets(cnn, images, target, pattern) -> None:
    with pytest.raises(WrapgradError, match=pattern):
        wrapgrad.wrap(cnn, "saliency")(images, target=target)


def test_valid_target_forms(cnn, images) -> None:
    explain = wrapgrad.wrap(cnn, "saliency")
    ref = explain(images, target=torch.tensor([1, 1, 1, 1]))
    for target in (1, torch.tensor(1), [1, 1, 1, 1], torch.tensor([1])):
        torch.testing.assert_close(explain(images, target=target), ref)


def test_unknown_names_get_suggestions(cnn) -> None:
    with pytest.raises(UnknownNameError, match=r"method: unknown explainer 'salency'.*'saliency'"):
        wrapgrad.wrap(cnn, "salency")
    with pytest.raises(UnknownNameError, match=r"enhancer: unknown enhancer 'smothgrad'"):
        wrapgrad.wrap(cnn, "saliency", enhancer="smothgrad")
    with pytest.raises(UnknownNameError, match=r"layer: unknown layer 'feature.2'.*'features.2'"):
        wrapgrad.wrap(cnn, "layer_grad_cam", layer="feature.2")
    with pytest.raises(UnknownNameError, match=r"options: unknown option 'n_step'.*'n_steps'"):
        wrapgrad.wrap(cnn, "integrated_gradients", n_step=5)


def test_misuse_of_methods_is_explained(cnn, images) -> None:
    with pytest.raises(WrapgradValueError, match=r"layer: LayerGradCam attributes to a layer"):
        wrapgrad.wrap(cnn, "layer_grad_cam")
    with pytest.raises(WrapgradValueError, match=r"layer: Saliency does not take a layer"):
        wrapgrad.wrap(cnn, "saliency", layer="features.0")
    with pytest.raises(WrapgradValueError, match=r"neuron_selector: NeuronGradient"):
        wrapgrad.wrap(cnn, "neuron_gradient", layer="features.0")(images)
    with pytest.raises(WrapgradValueError, match=r"target: LayerActivation takes no target"):
        wrapgrad.wrap(cnn, "layer_activation", layer="features.0")(images, target=1)
    with pytest.raises(WrapgradValueError, match=r"interpolate: only layer methods"):
        wrapgrad.wrap(cnn, "saliency", interpolate=True)
    other = copy.deepcopy(cnn)  # its layer would never see this model's forward pass
    with pytest.raises(WrapgradValueError, match=r"layer: expected a module of the model .*Conv2d"):
        wrapgrad.wrap(cnn, "layer_grad_cam", layer=other.features[0])
    with pytest.raises(WrapgradValueError, match=r"layer\[1\]: expected a module of the model"):
        wrapgrad.wrap(cnn, "layer_conductance", layer=[cnn.features[0], other.features[0]])
    assert wrapgrad.wrap(cnn, "layer_grad_cam", layer=cnn.features[0])(images, target=1).shape
    with pytest.raises(WrapgradTypeError, match=r"model: expected a torch.nn.Module"):
        wrapgrad.wrap(lambda x: x, "saliency")
    with pytest.raises(WrapgradTypeError, match=r"method: expected a method name"):
        wrapgrad.wrap(cnn, 42)


def test_no_random_numbers_drawn_without_enhancer(cnn, images) -> None:
    """wrap() consumes no global random state of its own (stochastic methods match Captum)."""
    model = nn.Sequential(nn.Dropout(0.5), SmallCNN()).train()
    torch.manual_seed(7)
    wrapgrad.wrap(model, "saliency")(images, target=1)
    after_wrapped = torch.rand(3)
    torch.manual_seed(7)
    from captum.attr import Saliency

    Saliency(model).attribute(images, target=1)
    torch.testing.assert_close(after_wrapped, torch.rand(3), rtol=0, atol=0)


MUTATIONS = {
    "scale_weight": lambda m: m.features[0].weight.data.mul_(3),
    "add_to_grad": lambda m: setattr(
        m.classifier[0].weight, "grad", torch.ones_like(m.classifier[0].weight)
    ),
    "freeze": lambda m: m.classifier[2].weight.requires_grad_(False),
    "train_flags": lambda m: m.train(not m.training),
    "forward_hook": lambda m: m.pool.register_forward_hook(lambda *a: None),
    "pre_hook": lambda m: m.features.register_forward_pre_hook(lambda *a: None),
    "backward_hook": lambda m: m.classifier.register_full_backward_hook(lambda *a: None),
    "replace_param": lambda m: setattr(m.classifier[2], "bias", nn.Parameter(torch.zeros(4))),
    "bn_update": lambda m: m.bn.train()(torch.randn(3, 6, 2, 2, dtype=m.bn.weight.dtype)),
    "to_double": lambda m: m.double(),
}


@given(st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=1, max_size=5))
@settings(max_examples=40, deadline=None)
def test_any_mutation_sequence_is_undone(names) -> None:
    model = BNNet().eval()
    before = _state(model)

    changed = {}

    def mutate_all() -> None:
        with ModelGuard(model, mode="verify"):
            for name in names:
                MUTATIONS[name](model)
            try:
                _assert_same(before, model)
                changed["any"] = False
            except AssertionError:
                changed["any"] = True

    try:
        mutate_all()
        raised = False
    except ModelMutatedError:
        raised = True
    assert raised == changed["any"]  # toggling a flag twice is no change
    _assert_same(before, model)


# -- the default guard: no copy of the weights ----------------------------------------------------
def _write_through_parameter(model: nn.Module) -> None:
    with torch.no_grad():
        model.classifier[0].weight.mul_(1.5)


def _write_through_detached_view(model: nn.Module) -> None:
    model.classifier[0].weight.detach()[0, 0] = 3.0


def _write_through_state_dict(model: nn.Module) -> None:
    model.state_dict()["classifier.0.weight"].add_(0.1)


@pytest.mark.parametrize(
    "write",
    [_write_through_parameter, _write_through_detached_view, _write_through_state_dict],
    ids=["parameter", "detached", "state_dict"],
)
def test_default_guard_raises_on_an_in_place_weight_change_naming_the_tensor(write, images) -> None:
    model = SmallCNN().eval()

    def explainer(model, inputs, target=None):
        write(model)
        return inputs

    with pytest.raises(ModelMutatedError, match=r"parameter classifier\.0\.weight changed value"):
        wrapgrad.wrap(model, explainer)(images)


def test_default_guard_restores_hooks_flags_and_grads_after_a_raising_explainer(
    images, labels
) -> None:
    model = BNNet().eval()
    before = _state(model)

    def vandal(model, inputs, target=None):
        model.train()  # flags
        model.features[0].bias.requires_grad_(True)
        model.features[2].register_forward_hook(lambda *a: None)
        model.classifier[0].register_forward_pre_hook(lambda *a: None)
        model(inputs).sum().backward()  # .grad filled; BatchNorm statistics updated in place
        raise RuntimeError("explainer failed mid-way")

    with pytest.raises(RuntimeError, match="mid-way"):
        wrapgrad.wrap(model, vandal)(images, target=labels)
    _assert_same(before, model)


def _reachable_tensors(root: object) -> list[torch.Tensor]:
    import gc

    seen: set[int] = set()
    found: list[torch.Tensor] = []
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (nn.Module, type)):
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            found.append(obj)
            continue
        stack.extend(gc.get_referents(obj))
    return found


def test_default_guard_holds_no_copy_of_the_parameters() -> None:
    from wrapgrad.guard import ModelGuard, ModelState

    model = BNNet().eval()
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    n_buffers = sum(b.numel() for b in model.buffers())

    def copies(state: object) -> list[torch.Tensor]:
        return [t for t in _reachable_tensors(state) if t.untyped_storage().data_ptr() not in own]

    with ModelGuard(model) as guard:
        held = _reachable_tensors(guard.state.__dict__)
        assert any(t is model.classifier[0].weight for t in held)  # references, not copies
        # Only the buffers (small: running statistics) are copied.
        assert sum(t.numel() for t in copies(guard.state.__dict__)) == n_buffers
    # The full snapshot, by contrast, holds a copy of every parameter too.
    full = copies(ModelState(model, values=True).__dict__)
    assert sum(t.numel() for t in full) == n_buffers + sum(p.numel() for p in model.parameters())


def test_every_wrapgrad_error_pickles_with_its_message_and_attributes() -> None:
    """Worker processes and ranks send their errors to the parent by pickle; errors whose
    constructor takes other arguments than the message (UnknownNameError, ...) used to fail to
    unpickle there (a BrokenProcessPool instead of the error)."""
    import pickle

    from wrapgrad_pipeline.schema import PipelineError, PipelineNameError

    from wrapgrad.distributed import RankFailedError
    from wrapgrad.errors import UnavailableError, UnknownNameError
    from wrapgrad.options import OptionCollisionError

    errors = [
        UnknownNameError("method", "salency", ["saliency", "deep_lift"], what="method"),
        UnavailableError("name", "metric", "quantus_x", "it scores batches"),
        OptionCollisionError("n_samples", ["enhancer 'smoothgrad'", "method 'gradient_shap'"]),
        RankFailedError("rank 1 failed", ranks=[1], errors={1: "ValueError: x"}),
        PipelineError("p.toml", "[data].samples", "expected an integer"),
        PipelineNameError("p.toml", "[model].name", "resnt", ["resnet"], what="model"),
    ]
    for error in errors:
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error)
        assert str(again) == str(error)
        assert again.__dict__ == error.__dict__
