"""The conformance kit's own tests: it passes correct components and fails deliberately broken
ones with a message naming the check and the component."""

from __future__ import annotations

import textwrap
from functools import partial
from typing import Any

import attrs
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wrapgrad.captum_adapter import FunctionExplainer
from wrapgrad.errors import UnknownNameError, WrapgradTypeError
from wrapgrad.records import (
    AttackSpec,
    DatasetSpec,
    EnhancerSpec,
    ExplainerSpec,
    ExplainerTraits,
    MetricSpec,
    ObjectiveSpec,
    PerturberSpec,
)
from wrapgrad.testing import (
    CHECKS,
    Component,
    as_component,
    check_component,
    checks_for,
    parametrize_with_checks,
)
from wrapgrad.testing.checks._base import model_unchanged
from wrapgrad.testing.probes import ProbeModel, make_probe

pytest_plugins = ("pytester",)

BY_NAME = {c.name: c for c in CHECKS}


def fails(component: Any, check: str, message: str = "") -> None:
    """``check`` fails for ``component``, naming both (and ``message``)."""
    c = as_component(component)
    with pytest.raises(AssertionError) as info:
        BY_NAME[check](c)
    text = str(info.value)
    assert text.startswith(f"{check} failed for {c.key}: "), text
    assert message in text, text
    # check_component names it too, among all failures.
    with pytest.raises(AssertionError) as info:
        check_component(c)
    assert f"{check} failed for {c.key}" in str(info.value)


# -- enhancers --------------------------------------------------------------------------------
class MiniSmoothGrad:
    """A correct SmoothGrad: the mean of the explainer over ``n_samples`` noisy inputs
    ``x + noise_level * ξ``, ξ drawn from a generator seeded with ``seed``."""

    def __init__(
        self, n_samples: int = 4, noise_level: float = 0.2, seed: int | None = None
    ) -> None:
        self.n_samples, self.noise_level, self.seed = n_samples, noise_level, seed

    def noise(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(0 if self.seed is None else self.seed)
        return torch.randn((self.n_samples, *x.shape), generator=g)

    def __call__(
        self, explainer: Any, model: Any, inputs: torch.Tensor, target: Any = None, **kw: Any
    ) -> torch.Tensor:
        noisy = inputs.unsqueeze(0) + self.noise_level * self.noise(inputs)
        return torch.stack([explainer(model, x, target, **kw) for x in noisy]).mean(0)


def enhancer(cls: type, name: str = "mini") -> EnhancerSpec:
    return EnhancerSpec(
        name=name, factory=cls, summary="test enhancer", levels={"noise_level": "input"}
    )


class WrongShape(MiniSmoothGrad):
    def __call__(self, *args: Any, **kw: Any) -> torch.Tensor:
        return super().__call__(*args, **kw).flatten(1)


class MutatesModel(MiniSmoothGrad):
    def __call__(self, explainer: Any, model: Any, *args: Any, **kw: Any) -> torch.Tensor:
        with torch.no_grad():
            next(model.parameters()).mul_(1.0001)  # "temporarily" scaled, never put back
        return super().__call__(explainer, model, *args, **kw)


class IgnoresSeed(MiniSmoothGrad):
    def noise(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn((self.n_samples, *x.shape))  # the global generator: seed unused


class LeaksHookOnError(MiniSmoothGrad):
    def __call__(self, explainer: Any, model: Any, *args: Any, **kw: Any) -> torch.Tensor:
        handle = model.register_forward_hook(lambda m, i, o: None)
        out = super().__call__(explainer, model, *args, **kw)
        handle.remove()  # not in a finally: an error leaves the hook behind
        return out


class NoZeroNoise(MiniSmoothGrad):
    def __init__(
        self, n_samples: int = 4, noise_level: float = 0.2, seed: int | None = None
    ) -> None:
        super().__init__(n_samples, max(noise_level, 0.05), seed)  # a floor on the noise


def test_a_correct_enhancer_passes_every_check() -> None:
    results = check_component(enhancer(MiniSmoothGrad))
    assert {r.check for r in results} == {c.name for c in checks_for(enhancer(MiniSmoothGrad))}
    assert {r.status for r in results} == {"passed"}
    assert "check_enhancer_zero_noise" in {r.check for r in results}


@pytest.mark.parametrize(
    ("cls", "check", "message"),
    [
        (WrongShape, "check_enhancer_output", "expected shape (3, 1, 8, 8), got (3, 64)"),
        (
            MutatesModel,
            "check_enhancer_model_unchanged",
            "changed the model: parameter features.0.weight changed value",
        ),
        (IgnoresSeed, "check_enhancer_seed", "two calls with seed 0"),
        (IgnoresSeed, "check_enhancer_model_unchanged", "changed torch's global random state"),
        (LeaksHookOnError, "check_enhancer_model_unchanged_on_error", "_forward_hooks changed"),
        (NoZeroNoise, "check_enhancer_zero_noise", "zero noise"),
    ],
)
def test_broken_enhancers_fail_naming_check_and_component(
    cls: type, check: str, message: str
) -> None:
    fails(enhancer(cls, name=cls.__name__.lower()), check, message)


def test_an_enhancer_that_swallows_the_models_error_fails() -> None:
    class Swallows(MiniSmoothGrad):
        def __call__(self, *args: Any, **kw: Any) -> torch.Tensor:
            try:
                return super().__call__(*args, **kw)
            except RuntimeError:
                return torch.zeros_like(args[2])

    fails(enhancer(Swallows), "check_enhancer_model_unchanged_on_error", "error was swallowed")


# -- explainers -------------------------------------------------------------------------------
def gradient(model: Any, inputs: torch.Tensor, target: Any = None, **kw: Any) -> torch.Tensor:
    x = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(x).gather(1, torch.as_tensor(target).reshape(-1, 1))
        (g,) = torch.autograd.grad(out.sum(), x, create_graph=kw.get("create_graph", False))
    return g


def explainer(fn: Any, *, carry: bool = True, **traits: Any) -> ExplainerSpec:
    """A spec whose factory builds ``fn`` carrying the declared traits (unless not ``carry``)."""
    declared = ExplainerTraits(name="grad", **traits)
    built = FunctionExplainer(fn, traits=declared) if carry else fn
    return ExplainerSpec(
        name="grad", factory=lambda: built, summary="test explainer", traits=declared
    )


def test_a_correct_explainer_passes_every_check_its_traits_promise() -> None:
    spec = explainer(gradient, requires_grad_inputs=True, differentiable=True, vmap_layout="block")
    results = check_component(spec)
    assert {"check_explainer_create_graph", "check_explainer_vmap"} <= {r.check for r in results}
    assert {r.status for r in results} == {"passed"}


def test_broken_explainers_fail() -> None:
    def batch_mean(model: Any, inputs: torch.Tensor, target: Any = None, **kw: Any) -> torch.Tensor:
        return gradient(model, inputs, target).mean(0, keepdim=True).expand_as(inputs)

    fails(
        explainer(batch_mean), "check_explainer_batch_independence", "the batch against its samples"
    )

    def wrong_dtype(
        model: Any, inputs: torch.Tensor, target: Any = None, **kw: Any
    ) -> torch.Tensor:
        return gradient(model, inputs, target).double()

    fails(explainer(wrong_dtype), "check_explainer_output", "expected dtype torch.float32")

    def no_graph(model: Any, inputs: torch.Tensor, target: Any = None, **kw: Any) -> torch.Tensor:
        return gradient(model, inputs, target)  # ignores create_graph

    fails(
        explainer(no_graph, differentiable=True), "check_explainer_create_graph", "carry no graph"
    )

    def sets_train_mode(
        model: Any, inputs: torch.Tensor, target: Any = None, **kw: Any
    ) -> torch.Tensor:
        model.train()
        return gradient(model, inputs, target)

    fails(
        explainer(sets_train_mode), "check_explainer_model_unchanged", "training changed from False"
    )

    def unseeded(model: Any, inputs: torch.Tensor, target: Any = None, **kw: Any) -> torch.Tensor:
        return gradient(model, inputs, target) * torch.rand(
            1, generator=torch.Generator().manual_seed(0)
        )

    # Traits on the spec only: the engine would never see them.
    fails(
        explainer(gradient, carry=False, vmap_layout="block"),
        "check_explainer_traits",
        "vmap_layout='block'",
    )

    # Declared stochastic, but the global seed makes no difference.
    fails(
        explainer(unseeded, stochastic=True),
        "check_explainer_seed",
        "seeds 0 and 1 give the same maps",
    )


def test_the_kit_builds_calls_from_the_traits() -> None:
    """Traits declare what the call needs: no target, or a baseline distribution; a component
    that declares otherwise than it behaves fails naming the check."""

    def activation(model: Any, inputs: torch.Tensor, target: Any = None, **kw: Any) -> torch.Tensor:
        if target is not None:
            raise ValueError("explains no output: takes no target")
        return inputs * model(inputs).sum(1).reshape(-1, 1, 1, 1).detach()

    passed = check_component(explainer(activation, takes_target=False))
    assert {r.status for r in passed} == {"passed"}
    fails(explainer(activation), "check_explainer_output", "takes no target")

    def expected_gradient(
        model: Any, inputs: torch.Tensor, target: Any = None, *, baselines: Any = None, **kw: Any
    ) -> torch.Tensor:
        # Needs a distribution: every sample is compared with every reference row.
        if baselines is None or baselines.shape[0] < 2:
            raise ValueError("baselines: expected a distribution of at least two rows")
        delta = inputs - baselines.mean(0, keepdim=True)
        return delta * gradient(model, inputs, target)

    # The kit passes baselines to a factory that takes them (its options name them).
    spec = explainer(expected_gradient, baseline_distribution=True)
    spec = attrs.evolve(spec, options=("baselines",))
    assert {r.status for r in check_component(spec)} == {"passed"}
    undeclared = attrs.evolve(spec, traits=spec.traits.evolve(baseline_distribution=False))
    undeclared = attrs.evolve(
        undeclared, factory=lambda: FunctionExplainer(expected_gradient, traits=undeclared.traits)
    )
    fails(undeclared, "check_explainer_batch_independence", "a distribution of at least two")

    # A neuron method that also explains a target (NeuronConductance) declares it.
    def neuron_times_target(
        model: Any, inputs: torch.Tensor, target: Any = None, **kw: Any
    ) -> torch.Tensor:
        if kw.get("neuron_selector") is None or target is None:
            raise ValueError("needs neuron_selector and a target")
        return gradient(model, inputs, target)

    both = explainer(neuron_times_target, family="neuron", takes_target=True)
    assert {r.status for r in check_component(both)} == {"passed"}
    fails(
        explainer(neuron_times_target, family="neuron"),
        "check_explainer_output",
        "needs neuron_selector and a target",
    )


def test_takes_target_defaults_to_the_familys_convention() -> None:
    assert ExplainerTraits().takes_target
    assert not ExplainerTraits(family="neuron").takes_target
    assert ExplainerTraits(family="neuron", takes_target=True).takes_target
    assert not ExplainerTraits(family="layer", takes_target=False).takes_target


# -- metrics ----------------------------------------------------------------------------------
def l2_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).norm(dim=1)


def metric(fn: Any, **fields: Any) -> MetricSpec:
    return MetricSpec(
        name="l2", factory=lambda: fn, summary="test metric", requires="maps", **fields
    )


def test_a_metric_with_the_right_direction_passes() -> None:
    assert {r.status for r in check_component(metric(l2_distance, higher_is_better=False))} == {
        "passed"
    }


def test_a_metric_with_the_wrong_direction_fails() -> None:
    fails(
        metric(l2_distance, higher_is_better=True),
        "check_metric_direction",
        "declared higher is better",
    )


def test_broken_metrics_fail() -> None:
    fails(
        metric(lambda a, b: l2_distance(a, b).mean(), higher_is_better=False),
        "check_metric_scores",
        "one score per sample",
    )

    def normalises_in_place(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a /= a.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
        return l2_distance(a, b)

    fails(
        metric(normalises_in_place, higher_is_better=False),
        "check_metric_scores",
        "an argument after the call",
    )

    def batch_normalised(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = l2_distance(a, b)
        return d / d.sum()

    fails(
        metric(batch_normalised), "check_metric_batch_independence", "the batch against its samples"
    )


def test_a_model_metric_that_leaves_a_hook_fails() -> None:
    def confidence(model: Any, inputs: torch.Tensor, target: Any, explain: Any) -> torch.Tensor:
        model.register_forward_pre_hook(lambda m, i: None)
        return model(inputs).softmax(1).gather(1, target.reshape(-1, 1))[:, 0]

    spec = MetricSpec(name="confidence", factory=lambda: confidence, summary="s", requires="model")
    fails(spec, "check_metric_model_unchanged", "_forward_pre_hooks changed (0 -> 1 hooks)")


def _focus(mosaics: torch.Tensor, positions: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """The share of positive relevance on the tiles ``positions`` flags."""
    b, _, h, w = maps.shape
    tiles = positions.reshape(b, 1, 2, 1, 2, 1).float()
    weight = tiles.expand(b, 1, 2, h // 2, 2, w // 2).reshape(b, 1, h, w)
    relevance = maps.clamp(min=0)
    return (relevance * weight).flatten(1).sum(1) / relevance.flatten(1).sum(1).clamp(min=1e-12)


def test_mosaic_metrics_are_checked_in_their_call_form() -> None:
    def focus(
        model: Any, mosaics: torch.Tensor, target: Any, explain: Any, positions: torch.Tensor
    ) -> torch.Tensor:
        return _focus(mosaics, positions, explain(mosaics, target=target)).double()

    spec = MetricSpec(
        name="focus", factory=lambda: focus, summary="s", requires="mosaic", higher_is_better=True
    )
    results = check_component(spec)
    assert {r.status for r in results} == {"passed"}
    assert "check_metric_model_unchanged_on_error" in {r.check for r in results}

    def mutating(
        model: Any, mosaics: torch.Tensor, target: Any, explain: Any, positions: torch.Tensor
    ) -> torch.Tensor:
        positions.zero_()  # scribbles on the caller's positions
        return focus(model, mosaics, target, explain, positions)

    fails(
        attrs.evolve(spec, factory=lambda: mutating),
        "check_metric_scores",
        "an argument after the call",
    )


def test_the_probe_mosaics_put_each_sample_on_its_flagged_tiles() -> None:
    probe = make_probe()
    assert probe.mosaics.shape == (3, 1, 16, 16)
    assert probe.positions.shape == (3, 4)
    for i in range(3):
        tiles = [probe.mosaics[i, :, r : r + 8, c : c + 8] for r in (0, 8) for c in (0, 8)]
        own = [bool(torch.equal(t, probe.inputs[i])) for t in tiles]
        assert own == [bool(f) for f in probe.positions[i].tolist()]
        assert sum(own) == 2


# -- perturbers -------------------------------------------------------------------------------
class UniformInput:
    target = "input"

    def __init__(self, scale: float = 0.1) -> None:
        self.scale = scale

    @property
    def is_zero(self) -> bool:
        return self.scale == 0

    def sample(
        self, x: torch.Tensor, n: int, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return x.unsqueeze(0) + self.scale * torch.rand((n, *x.shape), generator=generator)


def perturber(cls: type, target: str = "input") -> PerturberSpec:
    return PerturberSpec(name="uniform", factory=cls, summary="test perturber", target=target)


def test_a_correct_perturber_passes() -> None:
    assert {r.status for r in check_component(perturber(UniformInput))} == {"passed"}


def test_broken_perturbers_fail() -> None:
    class GlobalDraws(UniformInput):
        def sample(self, x: torch.Tensor, n: int, *, generator: Any = None) -> torch.Tensor:
            return x.unsqueeze(0) + self.scale * torch.rand((n, *x.shape))

    fails(perturber(GlobalDraws), "check_perturber_draws", "global random state")

    class AlwaysNoisy(UniformInput):
        @property
        def is_zero(self) -> bool:
            return True  # claims no noise but draws some

    fails(perturber(AlwaysNoisy), "check_perturber_zero", "is_zero is True but the draws")

    fails(perturber(UniformInput, target="weight"), "check_perturber_protocol", "target is 'input'")


# -- objectives and attacks -------------------------------------------------------------------
class CrossEntropy:
    def __call__(
        self, model: Any, inputs: torch.Tensor, target: torch.Tensor, generator: Any = None
    ) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(model(inputs), target)


def test_objectives() -> None:
    spec = ObjectiveSpec(name="ce", factory=CrossEntropy, summary="cross-entropy")
    assert {r.status for r in check_component(spec)} == {"passed"}

    class StepsItself(CrossEntropy):
        def __call__(self, model: Any, *args: Any, **kw: Any) -> torch.Tensor:
            loss = super().__call__(model, *args, **kw)
            loss.backward(retain_graph=True)  # fills .grad: the training loop's job
            return loss

    fails(
        ObjectiveSpec(name="steps", factory=StepsItself, summary="s"),
        "check_objective_changes_no_parameter",
        ".grad changed",
    )

    class Detached(CrossEntropy):
        def __call__(self, *args: Any, **kw: Any) -> torch.Tensor:
            return super().__call__(*args, **kw).detach()

    fails(
        ObjectiveSpec(name="detached", factory=Detached, summary="s"),
        "check_objective_loss",
        "carries no graph",
    )

    class Unseeded(CrossEntropy):
        def __call__(self, model: Any, inputs: torch.Tensor, *args: Any, **kw: Any) -> torch.Tensor:
            return super().__call__(model, inputs + 0.1 * torch.randn(inputs.shape), *args, **kw)

    fails(
        ObjectiveSpec(name="unseeded", factory=Unseeded, summary="s"),
        "check_objective_repeatable",
        "two losses",
    )


def test_attacks() -> None:
    class Step:
        """One signed-gradient step of size epsilon against the target logit, kept inside the
        ball; a record with inputs, epsilon and norm."""

        def __init__(self, epsilon: float = 0.01, overshoot: float = 1.0) -> None:
            self.epsilon, self.overshoot = epsilon, overshoot

        def __call__(self, model: Any, inputs: torch.Tensor, target: Any, explain: Any) -> Any:
            g = gradient(model, inputs, target)
            adv = inputs - self.overshoot * self.epsilon * g.sign()

            class Result:
                pass

            r = Result()
            r.inputs, r.epsilon, r.norm = adv.detach(), self.epsilon, "linf"  # type: ignore[attr-defined]
            return r

    assert {
        r.status for r in check_component(AttackSpec(name="step", factory=Step, summary="s"))
    } == {"passed"}
    outside = Component(
        spec=AttackSpec(name="step", factory=Step, summary="s"), options={"overshoot": 3.0}
    )
    fails(outside, "check_attack_result", "leave the ball of radius 0.01")


# -- data sets --------------------------------------------------------------------------------
def _tiny_data(split: str = "train", seed: int = 0, classes: int = 2) -> Any:
    from wrapgrad.datasets import InMemoryDataset

    g = torch.Generator().manual_seed(seed)
    inputs, labels = torch.rand(4, 1, 4, 4, generator=g), torch.tensor([0, 1, 0, 1])
    return InMemoryDataset(inputs, labels, num_classes=classes, name="tiny")


def test_a_data_set_with_the_wrong_shape_fails() -> None:
    good = DatasetSpec(
        name="tiny", factory=_tiny_data, summary="s", num_classes=2, input_shape=(1, 4, 4)
    )
    assert {r.status for r in check_component(good)} == {"passed"}
    wrong = DatasetSpec(
        name="tiny", factory=_tiny_data, summary="s", num_classes=2, input_shape=(1, 8, 8)
    )
    fails(wrong, "check_dataset_items", "input shape (1, 4, 4), declared (1, 8, 8)")
    fails(
        DatasetSpec(name="tiny", factory=_tiny_data, summary="s", num_classes=1),
        "check_dataset_items",
        "num_classes is 2, declared 1",
    )
    one_class = DatasetSpec(name="tiny", factory=partial(_tiny_data, classes=1), summary="s")
    fails(one_class, "check_dataset_items", "label 1 outside [0, 1)")


def test_a_command_factory_is_checked_as_hook_api_1_2_has_it() -> None:
    from wrapgrad.records import CommandSpec

    def new_style(parser: Any) -> Any:
        parser.add_argument("--name")
        return lambda args: 0

    def old_style(subparsers: Any) -> Any:  # hook API 1.0-1.1: adds its own sub-parser
        subparsers.add_parser("hello").add_argument("--name")
        return lambda args: 0

    def no_action(parser: Any) -> Any:
        parser.add_argument("--name")
        return "hello"

    spec = CommandSpec(name="hello", factory=new_style, summary="s")
    assert {r.status for r in check_component(spec)} == {"passed"}
    fails(
        CommandSpec(name="hello", factory=old_style, summary="s"),
        "check_command_parser",
        "the factory adds its own sub-parser (hook API 1.0-1.1)",
    )
    fails(
        CommandSpec(name="hello", factory=no_action, summary="s"),
        "check_command_parser",
        "the factory returned str, not an action",
    )


def test_a_data_set_is_checked_against_the_protocol_not_a_base_class() -> None:
    from torch.utils.data import TensorDataset

    from wrapgrad.protocols import LabelledDataset

    class Plain:  # the protocol's attributes, nothing inherited
        def __init__(self, split: str = "train", seed: int = 0) -> None:
            data = _tiny_data(split, seed)
            self.inputs, self.labels, self.masks = data.inputs, data.labels, {}
            self.num_classes, self.name = 2, "plain"

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, index: Any) -> tuple[torch.Tensor, torch.Tensor]:
            return self.inputs[index], self.labels[index]

        def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
            return self.inputs, self.labels

    assert isinstance(Plain(), LabelledDataset)
    assert isinstance(_tiny_data(), LabelledDataset)
    plain = DatasetSpec(name="plain", factory=Plain, summary="s", num_classes=2)
    assert {r.status for r in check_component(plain)} == {"passed"}

    def bare(split: str = "train", seed: int = 0) -> TensorDataset:
        return TensorDataset(*_tiny_data(split, seed).tensors())

    assert not isinstance(bare(), LabelledDataset)
    fails(
        DatasetSpec(name="bare", factory=bare, summary="s"),
        "check_dataset_items",
        "a TensorDataset has no inputs, labels, masks, num_classes, name, tensors()",
    )


# -- the spec check and the entry points ------------------------------------------------------
def test_spec_check_names_inconsistent_declarations() -> None:
    spec = EnhancerSpec(
        name="mini", factory=MiniSmoothGrad, summary="s", levels={"sigma": "weight"}
    )
    fails(spec, "check_spec", "levels ['sigma'] name no option of the factory")
    spec = EnhancerSpec(name="mini", factory=MiniSmoothGrad, summary="s", smoke={"steps": 1})
    fails(spec, "check_spec", "smoke caps ['steps']")
    fails(EnhancerSpec(name="mini", factory=MiniSmoothGrad), "check_spec", "no summary")


def test_components_resolve_from_every_form(registry: Any) -> None:
    spec = enhancer(MiniSmoothGrad)
    assert as_component(spec).spec is spec
    assert as_component(("enhancer", "smoothgrad")).key == "enhancer:smoothgrad"
    assert as_component("metric:topk_intersection").spec.name == "topk_intersection"
    made = as_component(("enhancer", MiniSmoothGrad))
    assert (made.key, made.spec.factory) == ("enhancer:mini_smooth_grad", MiniSmoothGrad)
    with pytest.raises(UnknownNameError, match="smoothgrad"):
        as_component(("enhancer", "smoothgard"))
    with pytest.raises(UnknownNameError, match="kind"):
        as_component(("enhancers", "smoothgrad"))
    with pytest.raises(WrapgradTypeError, match="component"):
        as_component(42)


def test_check_component_reports_declared_failures_and_refuses_stale_ones() -> None:
    spec = enhancer(WrongShape)
    results = check_component(
        spec,
        expected_failed_checks={
            "check_enhancer_output": "flattens",
            "check_enhancer_zero_noise": "flattens",
        },
    )
    assert {r.check for r in results if r.status == "xfailed"} == {
        "check_enhancer_output",
        "check_enhancer_zero_noise",
    }
    with pytest.raises(AssertionError, match="declared to fail"):
        check_component(
            enhancer(MiniSmoothGrad), expected_failed_checks={"check_enhancer_seed": "no"}
        )
    with pytest.raises(UnknownNameError, match="check_enhancer_sed"):
        check_component(spec, expected_failed_checks={"check_enhancer_sed": "typo"})


def test_parametrize_with_checks_ids_and_marks() -> None:
    spec = enhancer(WrongShape)
    mark = parametrize_with_checks(
        [spec], expected_failed_checks={"enhancer:mini": {"check_enhancer_output": "flattens"}}
    )
    assert mark.args[0] == ("component", "check")
    params = mark.args[1]
    assert [p.id for p in params] == [f"enhancer:mini-{c.name}" for c in checks_for(spec)]
    xfails = {p.id: p.marks[0].kwargs for p in params if p.marks}
    assert xfails == {"enhancer:mini-check_enhancer_output": {"reason": "flattens", "strict": True}}


def test_a_plugin_authors_test_file_runs_under_pytest(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        textwrap.dedent(
            """
            import torch
            from wrapgrad.records import MetricSpec
            from wrapgrad.testing import parametrize_with_checks

            def l2(a, b):
                return (a - b).flatten(1).norm(dim=1)

            GOOD = MetricSpec(name="l2", factory=lambda: l2, summary="s", higher_is_better=False)
            BAD = MetricSpec(name="l2_up", factory=lambda: l2, summary="s", higher_is_better=True)

            @parametrize_with_checks(
                [GOOD, BAD],
                expected_failed_checks={"metric:l2_up": {"check_metric_direction": "wrong on purpose"}},
            )
            def test_conformance(component, check):
                check(component)
            """
        )
    )
    result = pytester.runpytest("-q", "-p", "no:cacheprovider", "-k", "direction")
    result.assert_outcomes(passed=1, xfailed=1)
    result = pytester.runpytest("-q", "-p", "no:cacheprovider", "--collect-only")
    result.stdout.fnmatch_lines(["*test_conformance[[]metric:l2-check_metric_scores[]]*"])


# -- the kit's model-unchanged assertion ------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    index=st.integers(0, 10_000),
    delta=st.sampled_from([1e-6, -0.5, 3.0]),
)
def test_model_unchanged_sees_any_single_weight_change(seed: int, index: int, delta: float) -> None:
    model = ProbeModel(seed)
    params = list(model.parameters())
    p = params[index % len(params)]

    def change_one_weight() -> None:
        with model_unchanged(model), torch.no_grad():
            p.view(-1)[index % p.numel()] += delta

    with pytest.raises(AssertionError, match="changed value"):
        change_one_weight()
    # ... and put back: the model equals a fresh one again.
    fresh = ProbeModel(seed)
    for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)


def test_the_probe_is_seeded_and_leaves_the_global_generator_alone() -> None:
    state = torch.random.get_rng_state()
    a, b = make_probe(), make_probe()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.inputs, b.inputs)
    assert all(
        torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True)
    )
    assert a.labels.tolist() == a.model(a.inputs).argmax(1).tolist()


def test_every_check_is_documented_in_the_author_guide() -> None:
    from pathlib import Path

    guide = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text()
    missing = [c.name for c in CHECKS if f"`{c.name}`" not in guide]
    assert not missing, f"document these checks in docs/plugins.md: {missing}"
    assert all(c.doc for c in CHECKS), "every check has a docstring"
