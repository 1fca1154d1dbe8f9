"""The Monte-Carlo engine: strategies, chunking, seeding, batching of extra arguments, modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from wrapgrad_noise.perturbers import InputGaussian, WeightMultiplicative

from tests.conftest import MultiInputNet, SmallCNN
from wrapgrad.captum_adapter import CaptumExplainer
from wrapgrad.engine import (
    MonteCarloResult,
    StackedView,
    monte_carlo,
    noisy_forward,
    pick_strategy,
)
from wrapgrad.engine.plan import Chunk
from wrapgrad.engine.rng import derive_seeds, global_rng_restored, make_generator, seed_global_rng
from wrapgrad.engine.sampler import Sampler
from wrapgrad.errors import WrapgradTypeError, WrapgradValueError
from wrapgrad.functional import FunctionalView, ModelGuard, tied_names
from wrapgrad.registry import get_registry


def explainer(name: str, **options: object) -> CaptumExplainer:
    return get_registry().get("explainer", name).factory(**options)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(5))


def run(method: str, model: nn.Module, x: object, **kw: object) -> torch.Tensor:
    kw.setdefault("weight_sampler", WeightMultiplicative(0.2))
    kw.setdefault("n_models", 4)
    kw.setdefault("seed", 0)
    return monte_carlo(explainer(method), model, x, 1, **kw)


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("saliency", {}),
        ("input_x_gradient", {}),
        ("integrated_gradients", {"n_steps": 5}),
    ],
)
def test_vmap_and_loop_agree(method: str, kwargs: dict, x: torch.Tensor) -> None:
    model = SmallCNN().eval()
    common = {
        "input_sampler": InputGaussian(0.1),
        "n_inputs": 3,
        "aggregate": "variance",
        "attribute_kwargs": kwargs,
    }
    a = run(method, model, x, strategy="vmap", **common)
    b = run(method, model, x, strategy="loop", **common)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_any_two_chunk_sizes_agree(strategy: str, x: torch.Tensor) -> None:
    model = SmallCNN().eval()
    common = {"input_sampler": InputGaussian(0.1), "n_inputs": 3, "strategy": strategy}
    ref = run("saliency", model, x, max_batch=1, **common)
    for rows in (7, 36, 1000):
        torch.testing.assert_close(
            run("saliency", model, x, max_batch=rows, **common), ref, rtol=1e-5, atol=1e-7
        )


def test_same_seed_same_maps_other_seed_other_maps(x: torch.Tensor) -> None:
    model = SmallCNN().eval()
    a = run("saliency", model, x, seed=1)
    assert torch.equal(a, run("saliency", model, x, seed=1))
    assert not torch.allclose(a, run("saliency", model, x, seed=2))
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(
        run("saliency", model, x, seed=None, generator=g1),
        run("saliency", model, x, seed=None, generator=g2),
    )


def test_stacked_view_evaluates_each_weight_sample_on_its_rows(x: torch.Tensor) -> None:
    model = SmallCNN().eval()
    stacks = WeightMultiplicative(0.3).sample_parameters(model, 2, generator=torch.Generator())
    rows = torch.cat([x, x + 1])  # rows 0..2 for sample 0, rows 3..5 for sample 1
    for layout in ("block", "interleave"):
        view = StackedView(model, stacks, 2, 3, layout)
        out = view(rows)
        for k in range(2):
            ref = torch.func.functional_call(
                model, {n: v[k] for n, v in stacks.items()}, (rows[3 * k : 3 * k + 3],)
            )
            torch.testing.assert_close(out[3 * k : 3 * k + 3], ref, rtol=1e-5, atol=1e-6)
    # Integrated Gradients' step expansion: torch.cat([rows] * 2) keeps each row's sample.
    view = StackedView(model, stacks, 2, 3, "block")
    twice = view(torch.cat([rows, rows]))
    torch.testing.assert_close(twice, torch.cat([view(rows), view(rows)]))
    # NoiseTunnel's expansion inside GradientShap: repeat_interleave keeps each row's sample.
    view = StackedView(model, stacks, 2, 3, "interleave")
    torch.testing.assert_close(
        view(rows.repeat_interleave(3, dim=0)), view(rows).repeat_interleave(3, dim=0)
    )
    # A layout the view was not built for is refused, naming the way out.
    with pytest.raises(WrapgradValueError, match="strategy='loop'"):
        view(rows[:5])


def test_gradient_shap_vmapped_keeps_each_row_on_its_weight_sample() -> None:
    # GradientShap of a linear model with zero baselines is (W_t ⊙ η_k) ⊙ x exactly, whatever
    # its random interpolation points: any row evaluated under another weight sample would
    # differ from the loop. (GradientShap draws itself, so the engine gives it one weight sample
    # per vmap-ed call; un-interleaving several is test_stacked_view_evaluates_each_...'s part.)
    model = nn.Linear(5, 3).eval()
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    kw = {"baselines": torch.zeros(2, 5), "n_samples": 3}
    res = run(
        "gradient_shap",
        model,
        x,
        strategy="vmap",
        attribute_kwargs=kw,
        return_samples=True,
        max_batch=8,
    )
    vm, samples = res.attributions, res.samples
    lp = run("gradient_shap", model, x, strategy="loop", attribute_kwargs=kw)
    torch.testing.assert_close(vm, lp, rtol=1e-5, atol=1e-7)
    ix = run("input_x_gradient", model, x, strategy="vmap")
    torch.testing.assert_close(vm, ix, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(samples[0], samples[1])


def test_stochastic_methods_repeat_with_the_seed_and_leave_global_rng_alone() -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    kw = {"baselines": torch.zeros(3, 1, 8, 8), "n_samples": 2}
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    common = {"input_sampler": InputGaussian(0.1), "n_inputs": 2, "attribute_kwargs": kw}
    a = run("gradient_shap", model, x, **common)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert (np.random.get_state()[1] == np_state).all()
    assert torch.equal(a, run("gradient_shap", model, x, **common))
    assert not torch.equal(a, run("gradient_shap", model, x, seed=1, **common))


#: Methods that draw random numbers themselves, with the strategies that may run them (Lime
#: and KernelShap take the same path, by the same trait; their fits are slow to test here).
DRAWING_METHODS = [
    ("gradient_shap", ("vmap", "loop")),
    ("shapley_value_sampling", ("loop",)),
    ("feature_permutation", ("loop",)),
]


def drawing_method_case(method: str) -> tuple[nn.Module, torch.Tensor, dict]:
    g = torch.Generator().manual_seed(1)
    if method == "gradient_shap":
        kw = {"baselines": torch.randn(4, 1, 8, 8, generator=g), "n_samples": 3, "stdevs": 0.1}
        return SmallCNN().eval(), torch.randn(3, 1, 8, 8, generator=g), kw
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).eval()
    kw = {"n_samples": 2} if method == "shapley_value_sampling" else {}
    return model, torch.randn(3, 6, generator=g), kw


@pytest.mark.parametrize(("method", "strategies"), DRAWING_METHODS)
def test_methods_that_draw_themselves_do_not_depend_on_strategy_or_chunking(
    method: str, strategies: tuple[str, ...]
) -> None:
    # GradientShap draws its baselines, interpolation points and NoiseTunnel noise for all the
    # rows of a call at once, from the global RNGs; seeded once per estimate, a sample's draws
    # depended on the samples sharing its call and on every call before it, so vmap (several
    # weight samples per call) and loop, or two max_batch values, gave other maps.
    model, x, kw = drawing_method_case(method)
    common = {
        "input_sampler": InputGaussian(0.1),
        "n_models": 3,
        "n_inputs": 2,
        "seed": 7,
        "attribute_kwargs": kw,
        "return_samples": True,
    }
    runs = {
        (strategy, rows): run(method, model, x, strategy=strategy, max_batch=rows, **common)
        for strategy in strategies
        for rows in (1, 2 * x.shape[0], 1000)
    }
    ref = runs[("loop", 1000)]
    for res in runs.values():
        torch.testing.assert_close(res.samples, ref.samples, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(res.attributions, ref.attributions, rtol=1e-5, atol=1e-6)
    # The samples are still different draws (weight, input and the method's own noise).
    assert not torch.allclose(ref.samples[0], ref.samples[1])
    # SmoothGrad over the method (no weight noise): the K·N input samples of one model, alike.
    smooth = {**common, "weight_sampler": None}
    small = run(method, model, x, max_batch=1, **smooth).samples
    torch.testing.assert_close(run(method, model, x, **smooth).samples, small)


def test_a_drawing_method_s_sample_is_the_method_on_that_sample_alone() -> None:
    # The contract behind chunk independence: sample (k, j) is the method called on that
    # sample's noisy batch under weight sample k alone, the global RNGs seeded from the
    # sample's own entry of a second seed table (drawn after the engine's table).
    model, x, kw = drawing_method_case("gradient_shap")
    weights, inputs = WeightMultiplicative(0.2), InputGaussian(0.1)
    res = run(
        "gradient_shap",
        model,
        x,
        weight_sampler=weights,
        input_sampler=inputs,
        n_models=2,
        n_inputs=2,
        seed=3,
        strategy="vmap",
        attribute_kwargs=kw,
        return_samples=True,
    )
    g = make_generator("cpu", seed=3)
    table = derive_seeds(g, (2, 3))
    global_seeds = derive_seeds(g, (2, 2))
    sampler = Sampler(model, (x,), table, weights, inputs)
    for k in range(2):
        for j in range(2):
            (xs,) = sampler.inputs_for(Chunk((k,), j, j + 1))
            view = FunctionalView(model, sampler.weights(k))
            with global_rng_restored(torch.device("cpu")):
                seed_global_rng(global_seeds[k][j], torch.device("cpu"))
                alone = explainer("gradient_shap")(view, xs.requires_grad_(), 1, **kw)
            torch.testing.assert_close(res.samples[2 * k + j], alone, rtol=1e-5, atol=1e-6)


class GaussianNoise(nn.Module):
    """A regulariser that draws from torch's global RNG in training mode (``x + 0.3·ε``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.3 * torch.randn_like(x) if self.training else x


def test_models_that_draw_in_training_mode_do_not_depend_on_strategy_or_chunking() -> None:
    # Dropout and a Gaussian-noise layer draw from torch's global RNG for all the rows of a
    # call (randn_like's values for a row depend on the call's size): each sample runs in a call
    # of its own, the RNG seeded from the sample's seed (no BatchNorm here, which forced one
    # input sample per call anyway).
    model = nn.Sequential(
        nn.Linear(6, 8), nn.ReLU(), GaussianNoise(), nn.Dropout(0.5), nn.Linear(8, 3)
    ).train()
    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(0))
    noise = {
        "weight_sampler": WeightMultiplicative(0.2),
        "input_sampler": InputGaussian(0.1),
        "n_models": 2,
        "n_inputs": 3,
        "seed": 1,
    }
    maps, outs = [], []
    for strategy in ("vmap", "loop"):
        for rows in (2, 1000):
            with ModelGuard(model, mode="verify"):
                maps.append(run("saliency", model, x, strategy=strategy, max_batch=rows, **noise))
                outs.append(noisy_forward(model, x, strategy=strategy, max_batch=rows, **noise))
    for m in maps[1:]:
        torch.testing.assert_close(m, maps[0], rtol=1e-5, atol=1e-6)
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=1e-5, atol=1e-6)
    # The model's own draws are active (the eval-mode outputs differ).
    plain = noisy_forward(model.eval(), x, **noise)
    model.train()
    assert not torch.allclose(outs[0], plain)


def test_tuple_inputs_baselines_and_additional_forward_args() -> None:
    model = MultiInputNet().eval()
    g = torch.Generator().manual_seed(0)
    inputs = (torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 4, generator=g))
    baselines = (torch.zeros(2, 1, 8, 8), torch.zeros(2, 4))
    kw = {"baselines": baselines, "additional_forward_args": (2.0,), "n_steps": 4}
    outs = [
        run(
            "integrated_gradients",
            model,
            inputs,
            strategy=s,
            input_sampler=InputGaussian(0.1),
            n_inputs=2,
            attribute_kwargs=kw,
        )
        for s in ("vmap", "loop")
    ]
    for a, b, t in zip(outs[0], outs[1], inputs, strict=True):
        assert a.shape == t.shape
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_batch_first_additional_forward_args_are_tiled() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            return self.lin(x) * s

    model = Scaled().eval()
    x = torch.randn(2, 3)
    s = torch.tensor([[1.0], [3.0]])
    out = run(
        "saliency",
        model,
        x,
        weight_sampler=WeightMultiplicative(0.0),
        input_sampler=InputGaussian(0.1),
        n_inputs=5,
        attribute_kwargs={"additional_forward_args": (s,), "abs": False},
    )
    # f is linear in x: the gradient is s_b · W[1], whatever the noise.
    expected = s * model.lin.weight[1].detach()
    torch.testing.assert_close(out, expected.expand(2, 3), rtol=1e-5, atol=1e-6)


def test_hook_methods_loop_and_forced_vmap_is_refused() -> None:
    dl = explainer("deep_lift")
    assert pick_strategy(dl, torch.device("cpu")) == "loop"
    # auto: one plain call per weight sample on CPU (faster there), vmap on accelerators.
    assert pick_strategy(explainer("saliency"), torch.device("cpu")) == "loop"
    assert pick_strategy(explainer("saliency"), torch.device("cuda")) == "vmap"
    assert pick_strategy(dl, torch.device("cuda")) == "loop"
    # A method that draws itself runs one sample per call: auto loops, a forced vmap is honoured.
    assert pick_strategy(explainer("gradient_shap"), torch.device("cuda")) == "loop"
    assert pick_strategy(explainer("gradient_shap"), torch.device("cuda"), "vmap") == "vmap"
    # So does a model in training mode (dropout draws from the global RNG).
    assert pick_strategy(explainer("saliency"), torch.device("cuda"), training=True) == "loop"
    assert pick_strategy(explainer("saliency"), torch.device("cuda"), "vmap", training=True) == (
        "vmap"
    )
    with pytest.raises(WrapgradValueError, match="strategy: 'vmap' cannot run deep_lift"):
        pick_strategy(dl, torch.device("cpu"), "vmap")
    with pytest.raises(WrapgradValueError, match="internal_batch_size"):
        pick_strategy(
            explainer("integrated_gradients"),
            torch.device("cpu"),
            "vmap",
            {"internal_batch_size": 4},
        )
    with pytest.raises(WrapgradValueError, match="strategy: expected"):
        pick_strategy(dl, torch.device("cpu"), "fast")


def test_train_mode_batchnorm_and_dropout_run_without_leaks(x: torch.Tensor) -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(108, 4),
    ).train()
    outs = []
    for strategy in ("vmap", "loop"):
        for rows in (3, 1000):
            with ModelGuard(model, mode="verify"):
                outs.append(
                    run(
                        "saliency",
                        model,
                        x,
                        strategy=strategy,
                        input_sampler=InputGaussian(0.1),
                        n_inputs=2,
                        max_batch=rows,
                    )
                )
    assert model.training
    assert outs[0].shape == x.shape
    assert torch.isfinite(outs[0]).all()
    # Each noisy copy of the batch is normalised with its own batch statistics (as the model
    # would normalise the batch), and dropout draws from the seeded RNG: chunking and strategy
    # do not change the maps.
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], rtol=1e-4, atol=1e-6)
    # The zero-noise path runs the training-mode model once, on copies of its buffers.
    dropout_free = nn.Sequential(*list(model)[:4], list(model)[5]).train()
    with ModelGuard(dropout_free, mode="verify"):
        zero = monte_carlo(explainer("saliency"), dropout_free, x, 0, n_inputs=3, seed=0)
    with ModelGuard(dropout_free, mode="silent"):  # undoes the running-statistics update
        base = explainer("saliency")(dropout_free, x, 0)
    torch.testing.assert_close(zero, base)


def test_per_sample_feature_masks_are_tiled() -> None:
    # Feature ablation of a linear model: each group gets Σ_{i∈G} w_i x_i on all its elements,
    # so the map is constant on each row's own groups; the rows' masks differ.
    model = nn.Linear(4, 2).eval()
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    out = run(
        "feature_ablation",
        model,
        x,
        input_sampler=InputGaussian(0.1),
        n_inputs=3,
        max_batch=4,
        attribute_kwargs={"feature_mask": mask},
    )
    assert out[0, 0] == out[0, 1]
    assert out[0, 2] == out[0, 3]
    assert out[0, 1] != out[0, 2]
    assert out[1, 1] == out[1, 2] == out[1, 3]
    assert out[1, 0] != out[1, 1]


def test_return_samples_in_sample_order(x: torch.Tensor) -> None:
    model = SmallCNN().eval()
    res = run(
        "saliency",
        model,
        x,
        input_sampler=InputGaussian(0.1),
        n_inputs=2,
        max_batch=3,
        return_samples=True,
    )
    assert isinstance(res, MonteCarloResult)
    mean, samples = res.attributions, res.samples
    assert samples.shape == (8, *x.shape)
    torch.testing.assert_close(samples.mean(0), mean, rtol=1e-5, atol=1e-7)
    again = run(
        "saliency",
        model,
        x,
        input_sampler=InputGaussian(0.1),
        n_inputs=2,
        max_batch=100,
        return_samples=True,
        strategy="loop",
    ).samples
    torch.testing.assert_close(samples, again, rtol=1e-4, atol=1e-6)


def test_bad_engine_arguments(x: torch.Tensor) -> None:
    model = SmallCNN().eval()
    with pytest.raises(WrapgradValueError, match="aggregate"):
        run("saliency", model, x, aggregate="median")
    with pytest.raises(WrapgradValueError, match="max_batch"):
        run("saliency", model, x, max_batch=0)
    with pytest.raises(WrapgradValueError, match="return_convergence_delta"):
        run("integrated_gradients", model, x, attribute_kwargs={"return_convergence_delta": True})
    # An explainer whose map is not batch-first (one map for the whole batch) cannot be enhanced.
    with pytest.raises(WrapgradValueError, match="cannot apply to a method whose output is not"):
        monte_carlo(
            lambda m, i, t: m(i).sum(0, keepdim=True),
            model,
            x,
            None,
            input_sampler=InputGaussian(0.1),
            n_inputs=2,
        )
    with pytest.raises(WrapgradTypeError, match="aggregates tensors"):
        monte_carlo(
            lambda m, i, t: {"map": i},
            model,
            x,
            None,
            input_sampler=InputGaussian(0.1),
            n_inputs=2,
        )
    with pytest.raises(WrapgradValueError, match=r"inputs: input noise .* needs floating-point"):
        monte_carlo(
            lambda m, i, t: i.float(),
            model,
            torch.ones(2, 3, dtype=torch.long),
            None,
            input_sampler=InputGaussian(0.1),
            n_inputs=2,
        )


def test_noisy_forward_matches_functional_calls(x: torch.Tensor) -> None:
    model = SmallCNN().eval()
    # One noise configuration, run in chunks, by every strategy and through the explainer path.
    noise = {
        "weight_sampler": WeightMultiplicative(0.2),
        "input_sampler": InputGaussian(0.1),
        "n_models": 3,
        "n_inputs": 2,
        "seed": 4,
    }
    out = noisy_forward(model, x, max_batch=4, **noise)
    assert out.shape == (3, 2, 3, 4)
    for strategy in ("vmap", "loop"):
        again = noisy_forward(model, x, strategy=strategy, **noise)
        torch.testing.assert_close(out, again, rtol=1e-5, atol=1e-6)

    # Against the engine's explainer path: a "forward" explainer returns the logits.
    def logits(m: nn.Module, inp: torch.Tensor, target: object = None) -> torch.Tensor:
        return m(inp)

    samples = monte_carlo(logits, model, x, None, return_samples=True, **noise).samples
    torch.testing.assert_close(samples.reshape(3, 2, 3, 4), out, rtol=1e-5, atol=1e-6)
    clean = noisy_forward(model, x, n_models=2, n_inputs=1)
    torch.testing.assert_close(clean[1, 0], model(x))


class TiedNet(nn.Module):
    """Two linear maps sharing one weight (registered as ``a.weight`` and ``b.weight``)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = nn.Linear(4, 4, bias=False)
        self.b = nn.Linear(4, 4)
        with torch.no_grad():
            self.a.weight.copy_(torch.randn(4, 4, generator=g))
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


def test_tied_weights_get_one_noise_sample_in_every_place() -> None:
    model = TiedNet().eval()
    assert tied_names(model) == {
        "a.weight": ("a.weight", "b.weight"),
        "b.weight": ("a.weight", "b.weight"),
    }
    assert tied_names(SmallCNN()) == {}
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))
    noise = {"weight_sampler": WeightMultiplicative(0.5), "n_models": 3, "seed": 2}
    saliency = get_registry().get("explainer", "saliency").factory()
    samples = monte_carlo(saliency, model, x, 0, return_samples=True, **noise).samples
    seeds = derive_seeds(make_generator("cpu", seed=2), (3, 2))
    drawn = Sampler(model, (x,), seeds, WeightMultiplicative(0.5))
    for k in range(3):
        w = drawn.weights(k)
        assert set(w) == {"a.weight", "b.bias"}  # the tied weight is one parameter
        both = {**w, "b.weight": w["a.weight"]}
        xk = x.clone().requires_grad_()
        out = torch.func.functional_call(model, both, (xk,), tie_weights=False)
        (grad,) = torch.autograd.grad(out[:, 0].sum(), xk)
        torch.testing.assert_close(samples[k], grad.abs())
        # The view untied once gives what functional_call's own untying gives.
        view = FunctionalView(model, w, tied=tied_names(model))
        torch.testing.assert_close(view(x), FunctionalView(model, w)(x), rtol=0, atol=0)
        assert view.tensors["b.weight"] is w["a.weight"]
