"""A plugin that follows the protocols and nothing more works: minimal third-party perturbers and
explainers (plain classes, only the protocol members) through NoiseGrad, SmoothGrad and
FusionGrad, against hand-written loops over the very same draws; and the engine's declared
contracts (its configuration, perturber checks, enhancer specs)."""

from __future__ import annotations

import pytest
import torch
from wrapgrad_noise.enhancers import FusionGrad, NoiseGrad, SmoothGrad, VarGrad, option_names

import wrapgrad
from tests.conftest import SmallCNN
from wrapgrad.engine import MonteCarloConfig, RunningMoments, monte_carlo
from wrapgrad.errors import UnknownNameError, WrapgradTypeError, WrapgradValueError
from wrapgrad.functional import ModelSnapshot
from wrapgrad.registry import get_registry


class GradOfTarget:
    """A third-party explainer: the gradient of the target logit, nothing else (no traits)."""

    def __call__(self, model, inputs, target=None, **kwargs):  # type: ignore[no-untyped-def]
        x = inputs.detach().requires_grad_()
        out = model(x)
        picked = out[:, target] if isinstance(target, int) else out.gather(1, target[:, None])
        (g,) = torch.autograd.grad(picked.sum(), x)
        return g


def recording_perturbers(
    drawn: list[torch.Tensor], weights: list[torch.Tensor] | None = None
) -> tuple[object, object]:
    """An input and a weight perturber with only the protocol members; each draw is appended to
    ``drawn`` (weight draws to ``weights`` if given): lists outside the objects, so a test can
    replay exactly the engine's draws."""
    weights = drawn if weights is None else weights

    class UniformShift:  # input noise: x + u, u ~ U(0, 0.5)
        target = "input"
        is_zero = False

        def sample(self, x, n, *, generator=None):  # type: ignore[no-untyped-def]
            out = x.unsqueeze(0) + 0.5 * torch.rand((n, *x.shape), generator=generator)
            drawn.append(out)
            return out

    class TensorScale:  # weight noise: one random scale per tensor, W · (1 + u), u ~ U(0, 1)
        target = "weight"
        is_zero = False

        def parameter_names(self, model):  # type: ignore[no-untyped-def]
            return [n for n, _ in model.named_parameters() if n.endswith("weight")]

        def sample(self, w, n, *, generator=None):  # type: ignore[no-untyped-def]
            scale = 1 + torch.rand((n,) + (1,) * w.dim(), generator=generator)
            out = w.unsqueeze(0) * scale
            weights.append(out)
            return out

    return UniformShift(), TensorScale()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))


TARGET = torch.tensor([0, 3, 1])


def test_third_party_weight_perturber_and_explainer_through_noisegrad(x: torch.Tensor) -> None:
    model = SmallCNN().eval()
    snap = ModelSnapshot(model)
    drawn: list[torch.Tensor] = []
    _, weight = recording_perturbers(drawn)
    explain = wrapgrad.wrap(
        model, GradOfTarget(), "noisegrad", perturber=weight, n_samples=4, seed=0, guard="verify"
    )
    out = explain(x, target=TARGET)
    names = weight.parameter_names(model)  # type: ignore[attr-defined]
    assert len(drawn) == 4 * len(names)  # one draw per weight sample and selected parameter
    # The hand-written loop: NoiseGrad's mean over the same K weight samples (Eq. 1).
    expected = torch.zeros_like(x)
    for k in range(4):
        tensors = {n: drawn[k * len(names) + i][0] for i, n in enumerate(names)}
        view = lambda t, tensors=tensors: torch.func.functional_call(model, tensors, (t,))  # noqa: E731
        expected += GradOfTarget()(view, x, TARGET) / 4
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-7)
    assert snap.differences() == []
    # The draws follow the seed: the same seed gives the same maps, another seed others.
    assert torch.equal(out, explain(x, target=TARGET))
    other = wrapgrad.wrap(model, GradOfTarget(), "noisegrad", perturber=weight, n_samples=4, seed=1)
    assert not torch.allclose(other(x, target=TARGET), out)


@pytest.mark.parametrize("max_batch", [3, 1000])
def test_third_party_input_perturber_and_explainer_through_smoothgrad(
    x: torch.Tensor, max_batch: int
) -> None:
    model = SmallCNN().eval()
    drawn: list[torch.Tensor] = []
    inputs, _ = recording_perturbers(drawn)
    out = wrapgrad.wrap(
        model, GradOfTarget(), "smoothgrad", perturber=inputs, n_samples=5, seed=0,
        max_batch=max_batch,
    )(x, target=TARGET)  # fmt: skip
    assert len(drawn) == 5
    assert all(d.shape == (1, *x.shape) for d in drawn)
    expected = sum(GradOfTarget()(model, d[0], TARGET) for d in drawn) / 5
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-7)


def test_third_party_perturbers_through_fusiongrad_m_by_n(x: torch.Tensor) -> None:
    model = SmallCNN().eval()
    drawn: list[torch.Tensor] = []
    drawn_weights: list[torch.Tensor] = []
    inputs, weight = recording_perturbers(drawn, drawn_weights)
    out = FusionGrad(
        input_perturber=inputs, weight_perturber=weight, n_models=2, n_samples=3, seed=0
    )(GradOfTarget(), model, x, TARGET)
    names = weight.parameter_names(model)  # type: ignore[attr-defined]
    # M = 2 weight samples, each with its own N = 3 input draws (Eq. 2, ξ drawn per model).
    assert len(drawn_weights) == 2 * len(names)
    assert len(drawn) == 2 * 3
    expected = torch.zeros_like(x)
    for k in range(2):
        tensors = {n: drawn_weights[k * len(names) + i][0] for i, n in enumerate(names)}
        view = lambda t, tensors=tensors: torch.func.functional_call(model, tensors, (t,))  # noqa: E731
        for noisy in drawn[3 * k : 3 * k + 3]:
            expected += GradOfTarget()(view, noisy[0], TARGET) / 6
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-7)


def test_perturbers_by_registered_name_are_the_builtin_ones(x: torch.Tensor) -> None:
    model = SmallCNN().eval()
    for enhancer, opts in [
        ("smoothgrad", {"perturber": "input_gaussian", "noise_level": 0.1}),
        ("noisegrad", {"perturber": "weight_multiplicative", "sigma": 0.3}),
        (
            "fusiongrad",
            {"input_perturber": "input_gaussian", "weight_perturber": "weight_multiplicative"},
        ),
    ]:
        levels = {k: v for k, v in opts.items() if "perturber" not in k}
        named = wrapgrad.wrap(model, "saliency", enhancer, n_samples=2, seed=3, **opts)
        builtin = wrapgrad.wrap(model, "saliency", enhancer, n_samples=2, seed=3, **levels)
        assert torch.equal(named(x, target=1), builtin(x, target=1))


def test_a_perturber_of_the_wrong_target_names_the_option() -> None:
    drawn: list[torch.Tensor] = []
    inputs, weight = recording_perturbers(drawn)
    with pytest.raises(WrapgradValueError, match=r"perturber: expected an input perturber"):
        SmoothGrad(perturber=weight)
    with pytest.raises(WrapgradValueError, match=r"perturber: expected a weight perturber"):
        NoiseGrad(perturber=inputs)
    with pytest.raises(WrapgradValueError, match=r"weight_perturber: expected a weight"):
        FusionGrad(weight_perturber=inputs)
    with pytest.raises(WrapgradValueError, match=r"perturber: 'weight_multiplicative' is a weight"):
        VarGrad(perturber="weight_multiplicative")
    with pytest.raises(UnknownNameError, match=r"input_perturber: unknown .*'input_gaussian'"):
        FusionGrad(input_perturber="input_gausian")
    with pytest.raises(WrapgradTypeError, match=r"perturber: .* without sample"):
        SmoothGrad(perturber=type("NoSample", (), {"target": "input", "is_zero": False})())
    # A perturber object carries its own noise: a noise level beside it would be ignored.
    with pytest.raises(WrapgradValueError, match=r"noise_level: perturber is a perturber object"):
        SmoothGrad(perturber=inputs, noise_level=0.05)
    with pytest.raises(WrapgradValueError, match=r"include: perturber is a perturber object"):
        NoiseGrad(perturber=weight, include="features.*")


def test_one_message_for_auto_levels_outside_wrap() -> None:
    messages = set()
    for factory, opts in [
        (NoiseGrad, {"sigma": "auto"}),
        (FusionGrad, {"sigma": "auto"}),
        (SmoothGrad, {"noise_level": "auto"}),
    ]:
        with pytest.raises(WrapgradValueError, match="needs calibration data") as info:
            factory(**opts)
        key = next(iter(opts))
        messages.add(str(info.value).replace(key, "LEVEL"))
    assert len(messages) == 1


def test_enhancer_specs_declare_exactly_their_factories_options() -> None:
    reg = get_registry()
    for name, factory in [
        ("smoothgrad", SmoothGrad),
        ("noisegrad", NoiseGrad),
        ("fusiongrad", FusionGrad),
        ("vargrad", VarGrad),
    ]:
        spec = reg.get("enhancer", name)
        names, open_ = spec.option_names()
        assert not open_
        assert names == set(option_names(factory))
        # The declared names are exactly what the factory's __init__ takes.
        import inspect

        params = set(inspect.signature(factory).parameters)
        assert names == params
        assert spec.smoke_caps() == (
            {"n_samples": 2, "n_models": 2} if name == "fusiongrad" else {"n_samples": 2}
        )
    shared = {"n_samples", "aggregate", "seed", "generator", "strategy", "max_batch"}
    assert shared | {"abs_per_sample", "create_graph", "return_samples", "progress"} <= set(
        option_names(FusionGrad)
    )
    assert "aggregate" not in option_names(VarGrad)
    assert {"perturber", "noise_layer"} <= set(option_names(SmoothGrad))
    assert {"input_perturber", "weight_perturber", "noise_layer"} <= set(option_names(FusionGrad))


def test_unknown_enhancer_options_keep_their_suggestions() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'n_samples'"):
        wrapgrad.wrap(SmallCNN(), "saliency", "noisegrad", n_sample=3)


def test_config_validates_once_and_names_the_option() -> None:
    drawn: list[torch.Tensor] = []
    inputs, weight = recording_perturbers(drawn)
    with pytest.raises(WrapgradValueError, match="input_sampler: expected an input perturber"):
        MonteCarloConfig(input_sampler=weight)
    with pytest.raises(WrapgradValueError, match="aggregate: expected one of"):
        MonteCarloConfig(aggregate="median")
    with pytest.raises(WrapgradValueError, match="strategy: expected one of"):
        MonteCarloConfig(strategy="fast")
    with pytest.raises(WrapgradValueError, match="seed: pass either"):
        MonteCarloConfig(seed=1, generator=torch.Generator())
    with pytest.raises(WrapgradValueError, match=r"noise_layer: .* no input noise"):
        MonteCarloConfig(noise_layer="emb")
    with pytest.raises(WrapgradValueError, match=r"noise_layer: .* not 'vmap'"):
        MonteCarloConfig(input_sampler=inputs, noise_layer="emb", strategy="vmap")
    with pytest.raises(UnknownNameError, match="did you mean 'n_inputs'"):
        MonteCarloConfig().evolve(n_input=3)
    with pytest.raises(UnknownNameError, match="did you mean 'max_batch'"):
        monte_carlo(GradOfTarget(), SmallCNN(), torch.ones(1, 1, 8, 8), 0, max_batches=2)
    config = MonteCarloConfig(input_sampler=inputs, n_inputs=2)
    assert config.evolve(n_models=3).samples == 6
    with pytest.raises(WrapgradTypeError, match="config: expected a MonteCarloConfig"):
        MonteCarloConfig.build({"n_inputs": 2})  # type: ignore[arg-type]


def test_running_moments_refuse_an_untracked_aggregate() -> None:
    m = RunningMoments()
    m.update(torch.ones(3, 2))
    torch.testing.assert_close(m.result("mean"), torch.ones(2))
    with pytest.raises(WrapgradValueError, match="'mean_square' was not tracked"):
        m.result("mean_square")
    with pytest.raises(WrapgradValueError, match="'variance' was not tracked"):
        m.result("variance")
    with pytest.raises(WrapgradValueError, match="aggregate: expected one of"):
        m.result("median")
    with pytest.raises(WrapgradValueError, match="no samples"):
        RunningMoments().result("mean")


def test_model_with_a_third_party_perturber_is_left_alone_when_it_raises(x: torch.Tensor) -> None:
    class Broken:
        target = "weight"
        is_zero = False

        def parameter_names(self, model):  # type: ignore[no-untyped-def]
            return [n for n, _ in model.named_parameters()]

        def sample(self, w, n, *, generator=None):  # type: ignore[no-untyped-def]
            raise RuntimeError("bad draw")

    model = SmallCNN().eval()
    snap = ModelSnapshot(model)
    with pytest.raises(RuntimeError, match="bad draw"):
        wrapgrad.wrap(model, "saliency", "noisegrad", perturber=Broken(), n_samples=2)(x, target=0)
    assert snap.differences() == []
