"""The Quantus bridge: wrapgrad explanations (plain and enhanced) inside Quantus metrics."""

from __future__ import annotations

import numpy as np
import pytest
import quantus
import torch
import wrapgrad_quantus.metrics
from torch import nn
from wrapgrad_quantus import QuantusMetric, quantus_explain, quantus_metric

import wrapgrad
from wrapgrad.errors import (
    UnavailableError,
    UnknownNameError,
    WrapgradTypeError,
    WrapgradValueError,
)

from ._trained import state_of, unchanged

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class TinyNet(nn.Module):
    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4 * 10 * 10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).flatten(1))


@pytest.fixture
def data() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    model = TinyNet().eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 10, 10, generator=g)
    y = model(x).argmax(1)
    masks = torch.zeros(3, 1, 10, 10)
    masks[:, :, 2:6, 2:6] = 1
    return model, x, y, masks


_state, _unchanged = state_of, unchanged


#: The metrics the issue lists, with tiny settings.
METRICS = {
    "MaxSensitivity": {"nr_samples": 3},
    "AvgSensitivity": {"nr_samples": 3},
    "LocalLipschitzEstimate": {"nr_samples": 3},
    "FaithfulnessCorrelation": {"nr_runs": 4, "subset_size": 10, "return_aggregate": False},
    "PixelFlipping": {"features_in_step": 20},
    "RelevanceRankAccuracy": {},
    "AttributionLocalisation": {},
    "Sparseness": {},
    "Complexity": {},
    "ModelParameterRandomisation": {"layer_order": "bottom_up"},
}

#: Plain Saliency, SmoothGrad and NoiseGrad (the enhancers come from the noise plugin).
EXPLAINERS = {
    "saliency": ("saliency", None, {}),
    "smoothgrad": ("saliency", "smoothgrad", {"n_samples": 3, "noise_level": 0.1, "seed": 0}),
    "noisegrad": ("saliency", "noisegrad", {"n_samples": 3, "sigma": 0.2, "seed": 0}),
}


def _finite(scores: object) -> bool:
    if isinstance(scores, dict):
        return all(np.isfinite(np.asarray(v, dtype=float)).all() for v in scores.values())
    return bool(np.isfinite(np.asarray(scores, dtype=float)).all())


@pytest.mark.parametrize("explainer", list(EXPLAINERS))
@pytest.mark.parametrize("name", list(METRICS))
def test_listed_quantus_metrics_give_finite_scores(data, name: str, explainer: str) -> None:
    model, x, y, masks = data
    method, enhancer, options = EXPLAINERS[explainer]
    if enhancer is not None and enhancer not in wrapgrad.get_registry().names("enhancer"):
        pytest.fail(f"enhancer {enhancer!r} is not registered")
    before = _state(model)
    explain = wrapgrad.wrap(model, method, enhancer, **options)
    metric = quantus_metric(name, **METRICS[name])
    scores = metric(model, x, y, explain, s_batch=masks)
    assert _finite(scores), scores
    if isinstance(scores, torch.Tensor):
        assert scores.shape == (3,)
    # Quantus randomises layers of a copy: the user's model is untouched.
    assert _unchanged(model, before)
    assert not model.training


@pytest.mark.parametrize("name", list(METRICS))
def test_listed_quantus_metrics_on_rgb_inputs(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three channels: the maps keep the inputs' shape for the metrics that use them feature by
    feature, and lose their channel axis (summed, as Quantus' own explain does) for the
    localisation metrics, whose masks are (B, 1, H, W)."""
    model = TinyNet(channels=3).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 10, 10, generator=g)
    y = model(x).argmax(1)
    masks = torch.zeros(3, 10, 10)  # (B, H, W): the bridge adds the channel axis
    masks[:, 2:6, 2:6] = 1
    before = _state(model)
    seen: list[tuple[int, ...]] = []
    run = wrapgrad_quantus.metrics.QuantusMetric._run

    def recording(self, **kwargs):  # the maps Quantus receives, by shape
        seen.append(kwargs["a_batch"].shape)
        return run(self, **kwargs)

    monkeypatch.setattr(wrapgrad_quantus.metrics.QuantusMetric, "_run", recording)
    smoothgrad = wrapgrad.wrap(
        model, "saliency", "smoothgrad", n_samples=2, noise_level=0.1, seed=0
    )
    scores = quantus_metric(name, **METRICS[name])(model, x, y, smoothgrad, s_batch=masks)
    assert _finite(scores), scores
    localisation = name in ("RelevanceRankAccuracy", "AttributionLocalisation")
    assert seen
    assert seen[0] == ((3, 1, 10, 10) if localisation else (3, 3, 10, 10))
    assert _unchanged(model, before)


def test_quantus_explain_reduce_axes(data) -> None:
    model = TinyNet(channels=3).eval()
    x = torch.rand(2, 3, 10, 10, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1)
    full = quantus_explain(model, x.numpy(), y.numpy(), method="saliency", abs=False)
    assert full.shape == (2, 3, 10, 10)
    kept = quantus_explain(model, x.numpy(), y.numpy(), reduce_axes=(1,), abs=False)
    np.testing.assert_allclose(kept, full.sum(axis=1, keepdims=True), rtol=1e-6, atol=1e-7)
    dropped = quantus_explain(
        model, x.numpy(), y.numpy(), reduce_axes=[1], keepdims=False, abs=False
    )
    assert dropped.shape == (2, 10, 10)
    with pytest.raises(WrapgradValueError, match=r"^reduce_axes: .*batch axis"):
        quantus_explain(model, x.numpy(), y.numpy(), reduce_axes=(0,))
    with pytest.raises(WrapgradValueError, match=r"^s_batch: .*\(2, 1, 10, 10\)"):
        quantus_metric("AttributionLocalisation")(
            model, x, y, wrapgrad.wrap(model, "saliency"), s_batch=torch.ones(2, 1, 9, 9)
        )


def test_model_parameter_randomisation_sees_the_randomised_models(data) -> None:
    model, x, y, _ = data
    before = _state(model)
    seen: list[int] = []

    def spy(m, inputs, target=None):
        seen.append(id(m.model) if hasattr(m, "model") else id(m))
        return wrapgrad.wrap(m, "saliency")(inputs, target=target)

    explain = wrapgrad.wrap(model, spy)
    metric = quantus_metric("ModelParameterRandomisation", layer_order="independent")
    scores = metric.raw(model, x, y, explain)  # Quantus' result: per-layer similarities
    assert set(scores) == {"original", "conv", "fc"}
    # The maps of the randomised copies differ from the original's: similarity < 1.
    assert all(np.asarray(scores[layer]).mean() < 0.999 for layer in ("conv", "fc"))
    assert len(set(seen)) >= 2  # explanations were computed on other models than the user's
    # The registered score: per sample, the mean over the randomised layers (not "original").
    per_sample = metric(model, x, y, explain)
    want = (np.asarray(scores["conv"]) + np.asarray(scores["fc"])) / 2
    np.testing.assert_allclose(per_sample.numpy(), want, rtol=1e-12)
    assert metric.higher_is_better is False
    assert _unchanged(model, before)


def test_quantus_explain_follows_quantus_calling_convention(data) -> None:
    model, x, y, _ = data
    xn, yn = x.numpy(), y.numpy()
    out = quantus_explain(model, xn, yn, method="saliency", device="cpu")
    assert isinstance(out, np.ndarray)
    assert out.shape == xn.shape
    direct = wrapgrad.wrap(model, "saliency")(x, target=y).numpy()
    np.testing.assert_allclose(out, direct)
    # Enhancer options go through explain_func_kwargs, exactly as wrap() takes them.
    kwargs = {"method": "saliency", "enhancer": "noisegrad", "sigma": 0.2, "n_samples": 4}
    a = quantus_explain(model, xn, yn, seed=0, **kwargs)
    b = quantus_explain(model, xn, yn, seed=0, **kwargs)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, direct)
    # ... and inside a Quantus metric that calls it itself.
    metric = quantus.MaxSensitivity(nr_samples=2, disable_warnings=True, display_progressbar=False)
    scores = metric(
        model=model,
        x_batch=xn,
        y_batch=yn,
        device="cpu",
        explain_func=quantus_explain,
        explain_func_kwargs={**kwargs, "seed": 0},
    )
    assert np.isfinite(scores).all()
    # The bridge's own path with explain=None uses quantus_explain.
    sparse = quantus_metric("sparseness")(
        model, x, y, explain_func_kwargs={"method": "input_x_gradient"}
    )
    assert torch.isfinite(sparse).all()


def test_quantus_metric_names_and_errors(data) -> None:
    assert isinstance(quantus_metric("MaxSensitivity", nr_samples=2), QuantusMetric)
    assert quantus_metric("max_sensitivity").cls is quantus.MaxSensitivity
    assert quantus_metric("Max-Sensitivity").cls is quantus.MaxSensitivity
    assert quantus_metric("pixel-flipping").cls is quantus.PixelFlipping
    with pytest.raises(UnknownNameError, match="MaxSensitivity") as info:
        quantus_metric("MaxSensitivty")
    assert info.value.argument == "name"
    assert "MaxSensitivity" in info.value.suggestions
    model, x, y, _ = data
    with pytest.raises(WrapgradTypeError, match=r"^explain: "):
        quantus_metric("sparseness")(model, x, y, "saliency")
    with pytest.raises(UnknownNameError, match="options"):
        quantus_explain(model, x.numpy(), y.numpy(), method="saliency", sigmaa=0.1)


def test_every_quantus_metric_is_a_registered_metric(data) -> None:
    """``quantus_<snake case>`` per class, its direction (Quantus', but the paper's for
    RegionPerturbation's MoRF order), mask form for the localisation metrics, mosaic form for
    Focus, smoke caps only for options the class takes; SensitivityN, which gives no score per
    sample, unavailable with its reason."""
    import inspect

    from wrapgrad.registry import get_registry

    reg = get_registry()
    classes = wrapgrad_quantus.quantus_metrics()
    for cls_name, cls in classes.items():
        if cls_name in wrapgrad_quantus.metrics.NOT_PER_SAMPLE:
            with pytest.raises(UnavailableError, match="no score per sample"):
                reg.get("metric", wrapgrad_quantus.metric_name(cls_name))
            continue
        spec = reg.get("metric", wrapgrad_quantus.metric_name(cls_name))
        names = set(inspect.signature(cls.__init__).parameters)
        assert set(spec.smoke_caps()) <= names, cls_name
        direction = str(cls.score_direction.name).lower()
        quantus_says = {"higher": True, "lower": False}.get(direction)
        want = True if cls_name == "RegionPerturbation" else quantus_says
        assert spec.higher_is_better is want, cls_name
    assert set(wrapgrad_quantus.metrics.NOT_PER_SAMPLE) == {"SensitivityN"}
    assert reg.get("metric", "quantus_max_sensitivity").smoke_caps() == {"nr_samples": 2}
    assert reg.get("metric", "quantus_relevance_rank_accuracy").requires == "mask"
    assert reg.get("metric", "quantus_sparseness").requires == "model"
    assert reg.get("metric", "quantus_focus").requires == "mosaic"
    # declared options: the constructor's, plus the bridge's seed and batch_size, closed (so a
    # misspelt option is refused by name before anything runs)
    names, open_ = reg.get("metric", "quantus_max_sensitivity").option_names()
    assert not open_
    assert {"nr_samples", "lower_bound", "abs", "seed", "batch_size"} <= names
    # the mask form scores given maps exactly as the model form does
    model, x, y, masks = data
    explain = wrapgrad.wrap(model, "saliency")
    a = explain(x, target=y)
    by_maps = wrapgrad.metric("quantus_relevance_rank_accuracy", abs=True)(a, masks)
    by_model = quantus_metric("RelevanceRankAccuracy", abs=True)(
        model, x, y, explain, s_batch=masks
    )
    torch.testing.assert_close(by_maps, by_model)
    assert by_maps.shape == (3,)


def test_seed_fixes_quantus_perturbations_and_restores_numpy(data) -> None:
    model, x, y, _ = data
    explain = wrapgrad.wrap(model, "saliency")
    state = np.random.get_state()
    a = quantus_metric("MaxSensitivity", nr_samples=3, seed=5)(model, x, y, explain)
    b = quantus_metric("MaxSensitivity", nr_samples=3, seed=5)(model, x, y, explain)
    c = quantus_metric("MaxSensitivity", nr_samples=3, seed=6)(model, x, y, explain)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    after = np.random.get_state()
    assert after[0] == state[0]
    np.testing.assert_array_equal(after[1], state[1])  # numpy's global RNG left as it was


class _Counting(nn.Module):
    """TinyNet counting the inputs its forward sees."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinyNet()
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        return self.net(x)


def test_shared_predictions_are_exact_and_run_each_forward_pass_once(data) -> None:
    from wrapgrad_quantus.memo import MemoModel

    _, x, _, _ = data
    model = _Counting().eval()
    y = model(x).argmax(1)
    params = {"nr_runs": 6, "subset_size": 10, "seed": 3}
    plain = wrapgrad.wrap(model, "saliency")
    noisy = wrapgrad.wrap(model, "saliency", "noisegrad", sigma=0.3, n_samples=3, seed=0)
    reference = {
        name: quantus_metric("FaithfulnessCorrelation", **params)(model, x, y, e)
        for name, e in (("plain", plain), ("noisy", noisy))
    }
    model.seen = 0
    shared = quantus_metric("FaithfulnessCorrelation", share_predictions=True, **params)
    first = shared(model, x, y, plain)
    after_first = model.seen
    second = shared(model, x, y, noisy)  # other maps, the same inputs and subsets
    # exactly Quantus' scores, and the second explanation needed no new forward pass of the
    # perturbed copies (only its own explanation's)
    assert torch.equal(first, reference["plain"])
    assert torch.equal(second, reference["noisy"])
    assert after_first >= 6 * 3
    assert model.seen - after_first < after_first
    # The memory is per model state: an in-place change is a new state, never a stale answer.
    memo = MemoModel(model)
    with torch.no_grad():
        before = memo(x)  # x itself was predicted by the calls above: remembered
        assert memo.hits == 1
        model.net.fc.bias.add_(1.0)
        after = memo(x)
        assert memo.misses == 1
    assert torch.allclose(after, before + 1.0)
    with torch.no_grad():
        assert torch.equal(memo(x), after)
    assert memo.hits == 2
    with torch.enable_grad():  # gradients: always the model itself
        out = memo(x.requires_grad_(True))
    assert out.requires_grad


def test_no_quantus_call_changes_the_callers_random_state(data) -> None:
    """With or without a seed, NumPy's, Python's and torch's global RNGs are as before: MPRT's
    model randomisation calls torch.manual_seed, and MaxSensitivity draws from NumPy's RNG."""
    import random

    model, x, y, _ = data
    explain = wrapgrad.wrap(model, "saliency")
    for seed in (None, 3):
        np_state, py_state = np.random.get_state(), random.getstate()
        torch_state = torch.get_rng_state()
        quantus_metric("MaxSensitivity", nr_samples=2, seed=seed)(model, x, y, explain)
        quantus_metric("MPRT", layer_order="independent", seed=seed)(model, x, y, explain)
        np.testing.assert_array_equal(np.random.get_state()[1], np_state[1])
        assert random.getstate() == py_state
        assert torch.equal(torch.get_rng_state(), torch_state)
    # Without a seed, two calls draw different perturbations (fresh entropy, not a fixed seed).
    a = quantus_metric("MaxSensitivity", nr_samples=3)(model, x, y, explain)
    b = quantus_metric("MaxSensitivity", nr_samples=3)(model, x, y, explain)
    assert not torch.equal(a, b)


def _global_rng_states() -> tuple[object, ...]:
    import random

    return np.random.get_state(), random.getstate(), torch.random.get_rng_state()


def _assert_same_rng_states(before: tuple[object, ...]) -> None:
    import random

    np_before, py_before, torch_before = before
    np_after = np.random.get_state()
    assert np_after[0] == np_before[0]
    np.testing.assert_array_equal(np_after[1], np_before[1])
    assert np_after[2:] == np_before[2:]
    assert random.getstate() == py_before
    assert torch.equal(torch.random.get_rng_state(), torch_before)


def test_seed_none_leaves_every_global_rng_as_it_was(data) -> None:
    """seed=None is fresh randomness each call, drawn from no global RNG: quantus_explain (the
    engine drew an unseeded estimate's seed from torch's global RNG), the explain_func of
    explain_func_from, and a metric call whose maps come from an unseeded enhancer (its maps of
    the inputs were computed outside the metric's isolated RNGs) leave NumPy's, Python's and
    torch's global states unchanged; with a seed the results repeat."""
    from wrapgrad_quantus import explain_func_from

    model, x, y, _ = data
    xn, yn = x.numpy(), y.numpy()
    smooth = {"method": "saliency", "enhancer": "smoothgrad", "n_samples": 2, "noise_level": 0.3}
    noisy = wrapgrad.wrap(model, "saliency", "smoothgrad", n_samples=2, noise_level=0.3)
    explain_func = explain_func_from(noisy)
    calls = {
        "quantus_explain": lambda: quantus_explain(model, xn, yn, **smooth),
        "explain_func_from": lambda: explain_func(model, xn, yn),
        "metric": lambda: quantus_metric("MaxSensitivity", nr_samples=2)(model, x, y, noisy),
        "metric, explain_func_kwargs": lambda: quantus_metric("MaxSensitivity", nr_samples=2)(
            model, x, y, None, explain_func_kwargs=smooth
        ),
    }
    for name, call in calls.items():
        before = _global_rng_states()
        a, b = call(), call()
        _assert_same_rng_states(before)
        assert not np.array_equal(np.asarray(a), np.asarray(b)), name  # fresh each call
    # With a seed: the same maps and scores, the unseeded explanations a metric asks for too.
    a = quantus_explain(model, xn, yn, seed=4, **smooth)
    np.testing.assert_array_equal(a, quantus_explain(model, xn, yn, seed=4, **smooth))
    metric = quantus_metric("MaxSensitivity", nr_samples=2, seed=4)
    torch.testing.assert_close(metric(model, x, y, noisy), metric(model, x, y, noisy))
    efk = {"explain_func_kwargs": smooth}
    torch.testing.assert_close(metric(model, x, y, None, **efk), metric(model, x, y, None, **efk))


def test_a_failing_call_gives_the_random_states_back(data) -> None:
    """An error raised inside a metric call (after its RNGs were seeded: Quantus calls the
    explain_func, whose enhancer refuses its level) leaves the caller's states as they were; a
    seed that is not an int is refused naming seed."""
    model, x, y, _ = data
    bad = {"method": "saliency", "enhancer": "smoothgrad", "n_samples": 2, "noise_level": -1.0}
    before = _global_rng_states()
    with pytest.raises(WrapgradValueError, match="noise_level"):
        quantus_metric("MaxSensitivity", nr_samples=2, seed=1)(
            model, x, y, None, explain_func_kwargs=bad
        )
    _assert_same_rng_states(before)
    with pytest.raises(WrapgradTypeError, match="seed"):
        quantus_metric("MaxSensitivity", seed="1")


def test_the_renamed_mprt_is_built_and_run_without_its_notice(data, capsys, monkeypatch) -> None:
    """Quantus' ModelParameterRandomisation (its deprecated alias of MPRT) prints a rename notice
    on every construction, and, its options hidden behind (*args, **kwargs), the bridge could not
    default disable_warnings: under GITHUB_ACTIONS Quantus printed its parameterisation notes too.
    The bridge builds it with MPRT's constructor: nothing printed or warned, no filter or stream
    left changed, and MPRT's scores."""
    import sys
    import warnings

    monkeypatch.setenv("GITHUB_ACTIONS", "true")  # where Quantus prints its notes unless told
    model, x, y, _ = data
    explain = wrapgrad.wrap(model, "saliency")
    stdout = sys.stdout
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metric = wrapgrad.metric("quantus_model_parameter_randomisation", seed=2)
        scores = metric(model, x, y, explain)
        raw = quantus_metric("ModelParameterRandomisation", layer_order="independent").raw(
            model, x, y, explain
        )
    assert [str(w.message) for w in caught] == []
    assert capsys.readouterr() == ("", "")
    assert sys.stdout is stdout
    filters = list(warnings.filters)
    quantus_metric("ModelParameterRandomisation")
    assert warnings.filters == filters
    assert capsys.readouterr() == ("", "")
    assert isinstance(metric.quantus, quantus.ModelParameterRandomisation)
    assert metric.quantus.disable_warnings
    assert not metric.quantus.return_aggregate
    assert set(raw) >= {"original"}
    mprt = wrapgrad.metric("quantus_mprt", seed=2)(model, x, y, explain)
    torch.testing.assert_close(scores, mprt)
    # Its registered spec declares MPRT's options now (a misspelt one is refused by name).
    with pytest.raises(UnknownNameError, match="layer_ordr"):
        wrapgrad.metric("quantus_model_parameter_randomisation", layer_ordr="independent")


def test_maps_handed_to_quantus_are_one_float32_array_per_sample():
    from wrapgrad_quantus.explain import to_numpy_map

    t = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    out = to_numpy_map((t,))
    assert out.dtype == np.float32
    assert np.array_equal(out, t.numpy().astype(np.float32))
    with pytest.raises(WrapgradTypeError, match=r"explain_func.*tuple of 2"):
        to_numpy_map((t, t))
    with pytest.raises(WrapgradTypeError, match=r"explain_func.*tensor map"):
        to_numpy_map([1.0])


def test_explain_func_from_keeps_the_wrapped_seed_on_quantus_model_copies(data) -> None:
    """Quantus' randomisation tests explain copies of the model: the explain_func built from
    ``wrap(model, "lime", seed=0)`` explains a copy with the same seed (its draws repeat, as on
    the original), and a ``seed`` in ``explain_func_kwargs`` seeds an unseeded enhancer."""
    import copy

    from wrapgrad_quantus import explain_func_from

    model, x, y, _ = data
    xn, yn = x.numpy(), y.numpy()
    f = explain_func_from(wrapgrad.wrap(model, "lime", n_samples=8, seed=0))
    twin = copy.deepcopy(model)  # the same function: the same maps under the same draws
    np.testing.assert_array_equal(f(model, xn, yn), f(twin, xn, yn))
    np.testing.assert_array_equal(f(twin, xn, yn), f(copy.deepcopy(model), xn, yn))
    noisy = explain_func_from(wrapgrad.wrap(model, "saliency", "smoothgrad", n_samples=2))
    np.testing.assert_array_equal(noisy(twin, xn, yn, seed=1), noisy(twin, xn, yn, seed=1))
    assert not np.array_equal(noisy(twin, xn, yn, seed=1), noisy(twin, xn, yn, seed=2))
