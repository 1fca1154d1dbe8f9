"""The demo's protocol in the pipeline (issue 11): the split the model was trained on, the order
of |.| and the average, fresh noise for re-explanations, enhancer seeds, the noise-level sweep
and one name per noise level."""

from __future__ import annotations

import warnings
from pathlib import Path

import attrs
import pytest
import torch
from torch import nn
from wrapgrad_pipeline.context import RunContext
from wrapgrad_pipeline.runner import Pipeline
from wrapgrad_pipeline.schema import PipelineError
from wrapgrad_pipeline.steps.data import DataStep

from wrapgrad import hookimpl
from wrapgrad.records import MetricSpec
from wrapgrad.sharding import global_batches

from ._steps import AddModelStep, step_plugin


# -- the split -----------------------------------------------------------------------------------
def _leak_check(seed: int, **data: object) -> dict:
    return {
        "pipeline": {"name": "split", "seed": seed},
        "data": {"dataset": "cmnist", "samples": 200, "options": {"return_parts": True}, **data},
        "model": {"name": "small_resnet"},
        "calibration": {"ng": {"perturber": "weight", "samples": 500}},
        "explain": {"methods": ["saliency"]},
    }


def _data_context(raw: dict, tmp_path: Path) -> RunContext:
    config = Pipeline.from_dict(raw).config
    context = RunContext(config, out_dir=tmp_path, source_dir=tmp_path, smoke=False, progress=False)
    context.results["seeds"] = {}
    DataStep().run(config.tables["data"], context)
    return context


def test_a_pipeline_seed_never_puts_training_digits_among_the_test_samples(tmp_path: Path) -> None:
    from wrapgrad_data.cmnist import load_cmnist

    from wrapgrad.catalog import recipe

    split_seed = recipe("small_resnet", "cmnist").data_seed
    assert split_seed == 0
    trained_on = set(load_cmnist("train", split_seed, return_parts=True).parts["source"].tolist())
    # The bug: with the pipeline seed as the split seed, most "test" digits are training digits.
    leaky = set(load_cmnist("test", 1, return_parts=True).parts["source"].tolist())
    assert len(trained_on & leaky) > 500
    context = _data_context(_leak_check(seed=1), tmp_path)
    data = context.data
    assert context.results["data"]["split_seed"] == split_seed
    assert context.results["data"]["seed"] == 1
    source = data.dataset.parts["source"]
    evaluated = source[torch.tensor(context.results["data"]["items"])].tolist()
    _, _, (lo, hi) = data.held_out(500)
    held_out = source[data.order[lo:hi]].tolist()
    assert len(evaluated) == 200
    assert len(held_out) == 500
    assert not trained_on & set(evaluated)
    assert not trained_on & set(held_out)
    assert not set(evaluated) & set(held_out)  # calibration never sees an evaluated digit
    # The pipeline (sampling) seed chooses which test digits are evaluated, nothing else.
    again = _data_context(_leak_check(seed=2), tmp_path)
    assert torch.equal(again.data.dataset.inputs, data.dataset.inputs)  # the same split
    assert again.results["data"]["items"] != context.results["data"]["items"]


def test_a_split_seed_other_than_the_models_is_refused_for_the_test_split() -> None:
    with pytest.raises(PipelineError, match=r"\[data\]\.split_seed: expected 0, the split seed"):
        Pipeline.from_dict(_leak_check(seed=0, split_seed=1))
    raw = _leak_check(seed=3)
    raw["model"]["recipe"] = {"data_seed": 2}  # a model trained on another split
    assert Pipeline.from_dict(raw).config.tables["data"].split_seed == 2
    raw["data"]["split"] = "train"  # training items are what the file asks for: allowed
    raw["data"]["split_seed"] = 5
    assert Pipeline.from_dict(raw).config.tables["data"].split_seed == 5
    bad = _leak_check(seed=0)
    bad["data"]["options"]["seed"] = 1
    with pytest.raises(
        PipelineError, match=r"\[data\]\.options\.seed: expected \[data\]\.split_seed"
    ):
        Pipeline.from_dict(bad)


# -- a hand-built model: absolute values, signed maps --------------------------------------------
@attrs.frozen(kw_only=True)
class LinearTable:
    """A test step's table: a linear model on 8x8 digits with fixed signed weights."""

    seed: int = attrs.field(default=0, metadata={"doc": "its weights' seed"})


class LinearStep(AddModelStep):
    def label(self, table: LinearTable) -> tuple[str, str]:
        return "linear", "[linear]"

    def build(self, table: LinearTable, context) -> tuple[nn.Module, dict]:
        g = torch.Generator().manual_seed(table.seed)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        with torch.no_grad():
            model[1].weight.copy_(torch.randn(10, 64, generator=g))
            model[1].bias.zero_()
        return model, {"name": "linear", "source": "hand-built"}


def _linear(absolute: bool, method: str, **explain: object) -> dict:
    return {
        "pipeline": {"name": "linear", "seed": 0},
        "data": {"dataset": "digits8x8", "samples": 6},
        "linear": {},
        "explain": {
            "methods": [method],
            "absolute": absolute,
            "enhancers": [
                {"label": "Baseline"},
                {
                    "label": "SG",
                    "name": "smoothgrad",
                    "options": {"n_samples": 6, "noise_level": 0.3},
                },
            ],
            **explain,
        },
        "report": {"make_figures": False},
    }


def _run(raw: dict, tmp_path: Path, name: str = "out"):
    return Pipeline.from_dict(raw).run(tmp_path / name, progress=False)


def test_absolute_takes_the_absolute_value_of_every_draw_on_integrated_gradients(
    tmp_path: Path, registry
) -> None:
    registry.register(step_plugin("linear", LinearStep, LinearTable), name="linear")
    run = _run(_linear(True, "integrated_gradients"), tmp_path)
    sg = run.context.explanations["integrated_gradients"]["SG"]
    # The same draws, one by one: for a linear model IG is exactly (x + xi_j) * W[y]. The six
    # samples are one global batch, whose draws are seeded from the seed and the batch's index.
    (batch,) = global_batches(6, 32)
    per_draw = sg.rebuild(seed=batch.seed(sg.seed), abs_per_sample=False, return_samples=True)(
        run.context.data.inputs, target=run.context.data.labels
    ).samples  # (draws, B, 1, 8, 8)
    model = run.context.models["linear"].model
    w = model[1].weight.detach()[run.context.data.labels].reshape(-1, 1, 8, 8)
    x = run.context.data.inputs
    xi = per_draw / w - x  # the input noise of each draw (w has no zeros: Gaussian weights)
    assert xi.std() > 0.1  # noise_level 0.3 of each image's range
    mean_of_abs = per_draw.abs().mean(0)
    abs_of_mean = per_draw.mean(0).abs()
    # Blank pixels (x = 0) change sign from draw to draw: there the two orders differ.
    assert (mean_of_abs - abs_of_mean > 1e-3).float().mean() > 0.3
    assert torch.allclose(sg.maps, mean_of_abs, atol=1e-5)
    assert not torch.allclose(sg.maps, abs_of_mean, atol=1e-3)
    assert run.results["enhancer_settings"]["SG"]["options"]["abs_per_sample"] is True
    # absolute = false: the signed mean of the draws
    signed = _run(_linear(False, "integrated_gradients"), tmp_path, "signed")
    sg_signed = signed.context.explanations["integrated_gradients"]["SG"]
    assert torch.allclose(sg_signed.maps, per_draw.mean(0), atol=1e-5)
    assert (sg_signed.maps < 0).any()


def test_absolute_false_gives_signed_saliency_maps(tmp_path: Path, registry) -> None:
    registry.register(step_plugin("linear", LinearStep, LinearTable), name="linear")
    run = _run(_linear(False, "saliency"), tmp_path)
    model = run.context.models["linear"].model
    labels = run.context.data.labels
    w = model[1].weight.detach()[labels].reshape(-1, 1, 8, 8)  # the gradient of a linear model
    for label in ("Baseline", "SG"):  # SmoothGrad of a constant gradient is that gradient
        maps = run.context.explanations["saliency"][label].maps
        assert torch.allclose(maps, w, atol=1e-5)
        assert (maps < 0).any()  # Captum's default abs=True would have made them all >= 0
    absolute = _run(_linear(True, "saliency"), tmp_path, "abs")
    assert torch.allclose(absolute.context.explanations["saliency"]["Baseline"].maps, w.abs())
    # A method's own option still wins: abs = true in its options is Captum's |grad|.
    raw = _linear(False, "saliency", method_options={"saliency": {"abs": True}})
    own = _run(raw, tmp_path, "own")
    assert torch.allclose(own.context.explanations["saliency"]["Baseline"].maps, w.abs())


# -- enhancer seeds and fresh noise ---------------------------------------------------------------
class ProbeMetric:
    """Explains the same shifted inputs twice and once more the evaluated inputs themselves (as
    a new tensor): per sample, the change between the two re-explanations and from the known
    maps (zero with the seed held fixed, positive with fresh noise)."""

    higher_is_better = False

    def __call__(self, model, inputs, target, explain):
        known = explain(inputs, target=target)
        shifted = inputs + 0.01
        a, b = explain(shifted, target=target), explain(shifted.clone(), target=target)
        again = explain(inputs.clone(), target=target)
        return (a - b).flatten(1).norm(dim=1) + 1e3 * (again - known).flatten(1).norm(dim=1)


class _Probe:
    @staticmethod
    @hookimpl
    def wrapgrad_metrics():
        yield MetricSpec(
            name="probe", factory=ProbeMetric, summary="test", requires="model", options=()
        )


def _probe(fresh: bool, replicates: int = 3) -> dict:
    raw = _linear(True, "saliency")
    raw["linear"] = {}
    raw["explain"]["replicates"] = replicates
    raw["explain"]["enhancers"] = [
        {"label": "Baseline"},
        {"label": "NG", "name": "noisegrad", "options": {"n_samples": 4, "sigma": 0.5}},
    ]
    raw["evaluate"] = {"metrics": [{"label": "probe", "name": "probe", "fresh_noise": fresh}]}
    return raw


def test_fresh_noise_draws_new_noise_at_every_re_explanation_and_repeats(
    tmp_path: Path, registry
) -> None:
    registry.register(step_plugin("linear", LinearStep, LinearTable), name="linear")
    registry.register(_Probe(), name="probe")
    fixed = _run(_probe(False), tmp_path, "fixed").results
    fresh = _run(_probe(True), tmp_path, "fresh").results
    for results in (fixed, fresh):  # no noise, nothing to draw
        assert results["scores"]["saliency"]["Baseline"]["probe"] == [0.0] * 6
        assert len(results["scores_by_seed"]["saliency"]["Baseline"]["probe"]) == 1
    # Seed held fixed: every re-explanation has the maps' own draws.
    assert fixed["scores"]["saliency"]["NG"]["probe"] == [0.0] * 6
    # Fresh noise: two re-explanations of equal inputs differ, and differ from the known maps.
    by_seed = fresh["scores_by_seed"]["saliency"]["NG"]["probe"]
    assert len(by_seed) == 3
    assert all(v > 1.0 for row in by_seed for v in row)
    # the seed-averaged scores are the per-sample mean of the seeds' scores
    mean = [sum(col) / 3 for col in zip(*by_seed, strict=True)]
    assert fresh["scores"]["saliency"]["NG"]["probe"] == pytest.approx(mean)
    # seeded: the run repeats exactly
    again = _run(_probe(True), tmp_path, "again").results
    assert again["scores_by_seed"] == fresh["scores_by_seed"]
    assert fresh["enhancer_settings"]["NG"]["seeds"] == [0, 1, 2]


def test_fresh_noise_needs_a_metric_that_explains_again(registry) -> None:
    registry.register(step_plugin("linear", LinearStep, LinearTable), name="linear")
    raw = _probe(True)
    raw["evaluate"] = {
        "metrics": [{"label": "sparseness", "quantus": "Sparseness", "fresh_noise": True}]
    }
    Pipeline.from_dict(raw)  # Sparseness takes the model form (Quantus explains if asked)
    raw["evaluate"] = {
        "metrics": [
            {"label": "auc", "name": "localisation_auc", "masks": ["x"], "fresh_noise": True}
        ]
    }
    raw["data"]["dataset"] = "cmnist"
    raw["evaluate"]["metrics"][0]["masks"] = ["square"]
    with pytest.raises(PipelineError, match=r"fresh_noise: expected no fresh_noise"):
        Pipeline.from_dict(raw)


def test_enhancer_seeds_give_different_maps_and_the_plain_method_is_computed_once(
    tmp_path: Path, registry
) -> None:
    registry.register(step_plugin("linear", LinearStep, LinearTable), name="linear")
    registry.register(_Probe(), name="probe")
    raw = _probe(False, replicates=2)
    raw["explain"]["enhancers"][1]["options"]["seed"] = 10
    run = _run(raw, tmp_path)
    ng = run.context.explanations["saliency"]["NG"]
    assert [r.seed for r in ng.runs()] == [10, 11]
    assert not torch.equal(ng.maps, ng.replicates[0].maps)
    (batch,) = global_batches(6, 32)  # one global batch: its draws seeded from seed and index
    again = ng.replicates[0].explain_for(batch)(
        run.context.data.inputs, target=run.context.data.labels
    )
    assert torch.equal(
        ng.rebuild(seed=batch.seed(11))(run.context.data.inputs, target=run.context.data.labels),
        again,
    )
    assert torch.equal(again.abs(), ng.replicates[0].maps)
    assert run.context.explanations["saliency"]["Baseline"].replicates == []


# -- the sweep -----------------------------------------------------------------------------------
SWEEP = {
    "pipeline": {"name": "sweep", "seed": 0},
    "data": {"dataset": "cmnist", "samples": 8},
    "model": {"name": "small_resnet"},
    "calibration": {
        "ng": {"perturber": "weight", "samples": 60, "options": {"draws": 3, "tol": 0.05}},
        "sg": {"perturber": "input", "samples": 60, "options": {"draws": 3, "tol": 0.05}},
    },
    "explain": {"methods": ["saliency"], "enhancers": [{"label": "Baseline"}]},
    "sweep": {
        "samples": 6,
        "curves": [
            {
                "label": "NG",
                "enhancer": "noisegrad",
                "option": "sigma",
                "level": "@calibration.ng.sigma",
                "scales": [1.0, 2.0],
                "options": {"n_samples": 2},
            },
            {
                "label": "SG",
                "enhancer": "smoothgrad",
                "option": "noise_level",
                "level": "@calibration.sg.noise_level",
                "scales": [0.5, 1.0],
                "named": {"paper": 0.2},
                "options": {"n_samples": 2},
            },
        ],
    },
    "report": {"grid_samples": 1},
}


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WRAPGRAD_CACHE", str(folder / "cache"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a smoke model's calibration may not converge
            return Pipeline.from_dict(SWEEP).run(folder / "out", smoke=True, progress=False)


def test_the_sweep_measures_the_drop_as_the_calibration_did(sweep_run) -> None:
    results = sweep_run.results
    sweep = results["sweep"]
    for label, name in (("NG", "ng"), ("SG", "sg")):
        record = results["calibration"][name]
        curve = sweep["curves"][label]
        assert curve["calibrated"] == record["sigma" if label == "NG" else "noise_level"]
        at_one = next(p for p in curve["points"] if p["scale"] == 1.0)
        assert at_one["level"] == curve["calibrated"]
        assert at_one["drop"] == record["drop"]  # the same items and draws
        assert "error" not in record
        for p in curve["points"]:
            assert len(p["scores"]) == 6
            assert 0.0 <= p["mean"] <= 1.0
    assert sweep["curves"]["SG"]["named"]["paper"]["level"] == 0.2
    assert 0.0 <= sweep["baseline"]["mean"] <= 1.0
    md = sweep_run.report_path.read_text(encoding="utf-8")
    assert "## Noise-level sweep" in md
    assert "noise_level = 0.2 (paper)" in md
    figure = sweep_run.out_dir / "figures" / "sweep.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"title": "noise-level sweep", "path": "figures/sweep.png"} in results["figures"]


def test_the_sweep_is_checked_when_the_file_is_read() -> None:
    import copy

    raw = copy.deepcopy(SWEEP)
    raw["sweep"]["curves"][0]["level"] = "@calibration.sg.noise_level"
    with pytest.raises(PipelineError, match=r"curves\[0\]\.level: expected a sigma reference"):
        Pipeline.from_dict(raw)
    raw = copy.deepcopy(SWEEP)
    raw["sweep"]["metric"] = "topk_intersection"
    with pytest.raises(PipelineError, match=r"\[sweep\]\.metric: expected a metric that compares"):
        Pipeline.from_dict(raw)
    raw = copy.deepcopy(SWEEP)
    raw["sweep"]["curves"][1]["options"]["noise_level"] = 0.1
    with pytest.raises(PipelineError, match=r"options\.noise_level: expected it in `level`"):
        Pipeline.from_dict(raw)


# -- one name per noise level --------------------------------------------------------------------
def _named(ref: str, perturber: str = "input", calibrator: str = "accuracy_drop") -> dict:
    return {
        "pipeline": {"name": "names"},
        "data": {"dataset": "digits8x8", "samples": 4},
        "model": {"name": "small_cnn"},
        "calibration": {"c": {"perturber": perturber, "calibrator": calibrator}},
        "explain": {
            "methods": ["saliency"],
            "enhancers": [{"label": "SG", "name": "smoothgrad", "options": {"noise_level": ref}}],
        },
    }


def test_level_references_say_sigma_for_weight_noise_and_noise_level_for_input_noise() -> None:
    config = Pipeline.from_dict(_named("@calibration.c.noise_level*0.5")).config
    assert config.tables["explain"].enhancers[0].options["noise_level"] == (
        "@calibration.c.noise_level*0.5"
    )
    # the forms before 0.1 still work, rewritten, with a DeprecationWarning
    for old in ("@calibration.c.sigma*0.5", "@calibration.c.alpha*0.5"):
        with pytest.warns(DeprecationWarning, match="noise_level"):
            config = Pipeline.from_dict(_named(old)).config
        assert config.tables["explain"].enhancers[0].options["noise_level"] == (
            "@calibration.c.noise_level*0.5"
        )
    with pytest.warns(DeprecationWarning, match="alpha"):
        Pipeline.from_dict(_named("@calibration.c.alpha", calibrator="halve"))
    # a weight calibration sets no noise_level
    with pytest.raises(PipelineError, match="expected a level the calibration 'c' sets"):
        Pipeline.from_dict(_named("@calibration.c.noise_level", perturber="weight"))


@pytest.mark.usefixtures("shared_cache")
def test_the_run_resolves_noise_level_references(tmp_path: Path) -> None:
    raw = _named("@calibration.c.noise_level*0.5")
    raw["calibration"]["c"]["samples"] = 64
    results = Pipeline.from_dict(raw).run(tmp_path / "out", smoke=True, progress=False).results
    record = results["calibration"]["c"]
    assert record["sigma"] is None
    assert results["enhancer_settings"]["SG"]["options"]["noise_level"] == pytest.approx(
        0.5 * record["noise_level"]
    )


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("wrapgrad-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WRAPGRAD_CACHE", str(folder))
        yield folder


# -- the deviations name the run's own sizes -------------------------------------------------------
def test_the_demos_deviations_name_the_sizes_of_a_smoke_run(tmp_path: Path) -> None:
    """Under ``--smoke`` the demo's report states the shrunk sizes it ran with, not the full
    protocol's (the texts are filled in from the run's results: nothing is left as n/a but what
    a failed calibration did not measure)."""
    import tomllib

    demo = Path(__file__).parents[1] / "examples" / "noisegrad_cmnist.toml"
    raw = tomllib.loads(demo.read_text(encoding="utf-8"))
    raw["report"]["make_figures"] = False
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WRAPGRAD_CACHE", str(tmp_path / "cache"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a smoke model's calibration may not converge
            run = Pipeline.from_dict(raw).run(tmp_path / "out", smoke=True, progress=False)
    text = run.report_path.read_text(encoding="utf-8")
    section = text.split("## Deviations from the protocol")[1].split("\n## ")[0]
    r = run.results
    n = r["data"]["samples"]
    robustness = next(m for m in r["metrics"] if m["key"] == "robustness")
    ig = r["method_options"]["integrated_gradients"]
    assert n < 256
    assert f"Saliency on {n} samples" in section
    assert f"{robustness['params']['nr_samples']} perturbations" in section
    assert f"on the first {robustness['samples']} samples of Saliency" in section
    assert f"n_steps = {ig['n_steps']}" in section
    fg = r["enhancer_settings"]["FG"]["options"]
    assert f"{fg['n_models']} x {fg['n_samples']} draws x {r['replicates']} seeds" in section
    assert f"two residual blocks ({r['model']['parameters']:,} parameters" in section
    # Only a failed calibration leaves numbers out: the smoke run's two-block model is still at
    # chance after one epoch on 256 items, so no input-noise level drops its accuracy by 5 %
    # (the calibration records why); the alpha_SG text then says n/a for what it did not measure.
    failed = {name for name, c in r["calibration"].items() if c.get("error")}
    for line in section.strip().splitlines():
        if "n/a" in line:
            assert line.startswith("- alpha_SG"), line
            assert "sg" in failed, line


# -- what a metric scored ------------------------------------------------------------------------
def test_results_say_how_many_samples_each_metric_scored_per_method(tmp_path: Path) -> None:
    # `samples` is the metric's cap; `scored` what it scored: fewer where a method explained
    # fewer ([explain].method_samples), and only for the methods it runs on.
    from tests.test_distributed_pipeline import _weights, tables

    raw = tables(_weights(tmp_path))
    raw["explain"]["methods"] = ["saliency", "input_x_gradient"]
    raw["explain"]["method_samples"] = {"input_x_gradient": 3}
    raw["evaluate"] = {
        "metrics": [
            {"label": "sparse", "quantus": "Sparseness"},
            {"label": "capped", "quantus": "Sparseness", "samples": 5},
            {"label": "one", "quantus": "Sparseness", "samples": 5, "methods": ["saliency"]},
        ]
    }
    run = Pipeline.from_dict(raw).run(tmp_path / "out", progress=False)
    rows = {row["key"]: row for row in run.results["metrics"]}
    assert rows["sparse"]["samples"] is None
    assert rows["sparse"]["scored"] == {"saliency": 7, "input_x_gradient": 3}
    assert rows["capped"]["scored"] == {"saliency": 5, "input_x_gradient": 3}
    assert rows["one"]["scored"] == {"saliency": 5}
    scores = run.results["scores"]
    assert len(scores["input_x_gradient"]["Baseline"]["capped"]) == 3
    assert len(scores["saliency"]["Baseline"]["capped"]) == 5
