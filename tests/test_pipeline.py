"""Pipeline files: validation before any work, the runner, the CLI, and every example end to end."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import attrs
import pytest
import torch
from wrapgrad_pipeline.report import load_results, render_markdown
from wrapgrad_pipeline.runner import Pipeline, shrink, tomllib
from wrapgrad_pipeline.schema import PipelineError, PipelineNameError, check_output_path
from wrapgrad_pipeline.steps.explain import EnhancerTable as ExplainTableEnhancer

from wrapgrad import hookimpl
from wrapgrad.cli import main
from wrapgrad.errors import UnknownNameError, WrapgradValueError
from wrapgrad.records import EnhancerSpec, ExplainerSpec, MetricSpec, PipelineStepSpec
from wrapgrad.registry import Registry, get_registry, use_registry

from ._steps import AddModelStep, step_plugin

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.toml"))

GOOD = """
[pipeline]
name = "tiny"
seed = 3

[data]
dataset = "digits8x8"
samples = 12

[model]
name = "small_cnn"

[calibration.ng]
perturber = "weight"
samples = 64

[explain]
methods = ["saliency"]

[[explain.enhancers]]
label = "Baseline"

[[explain.enhancers]]
label = "NG"
name = "noisegrad"
options = { n_samples = 3, sigma = "@calibration.ng.sigma" }

[[explain.enhancers]]
label = "NGhalf"
name = "noisegrad"
options = { n_samples = 2, sigma = "@calibration.ng.sigma*0.5" }

[[explain.enhancers]]
label = "NG0"
name = "noisegrad"
options = { n_samples = 2, sigma = 0.0 }

[[evaluate.metrics]]
label = "sparseness"
quantus = "Sparseness"

[[evaluate.metrics]]
label = "complexity"
quantus = "Complexity"
samples = 4

[[evaluate.metrics]]
label = "faithfulness"
quantus = "FaithfulnessCorrelation"
samples = 5
params = { nr_runs = 3, subset_size = 8 }

[report]
grid_samples = 2

[[report.expect]]
metric = "sparseness"
best = "Baseline"
"""


def write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def broken(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One model cache for the module: smoke training (one epoch on 256 items) happens once."""
    folder = tmp_path_factory.mktemp("wrapgrad-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WRAPGRAD_CACHE", str(folder))
        yield folder


# -- validation: broken files fail before any work, naming the field --------------------------
@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any data loading or training fails the test: validation must not need it."""
    import wrapgrad_data.cache as cache

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("validation trained or loaded something")

    import wrapgrad_data

    monkeypatch.setattr(cache, "pretrained", forbidden)
    monkeypatch.setattr(cache, "train", forbidden)
    monkeypatch.setattr(wrapgrad_data, "pretrained", forbidden)  # what the runner calls
    import wrapgrad_data.cmnist as cmnist
    import wrapgrad_data.mnist as mnist

    monkeypatch.setattr(cmnist, "load_cmnist", forbidden)
    monkeypatch.setattr(mnist, "load_digits8x8", forbidden)


@pytest.mark.usefixtures("no_work")
@pytest.mark.parametrize(
    ("old", "new", "field", "expected"),
    [
        # unknown plugin names, with suggestions
        (
            'name = "noisegrad"\noptions = { n_samples = 3',
            'name = "noisegrd"\noptions = { n_samples = 3',
            "[explain].enhancers[1].name",
            "did you mean 'noisegrad'",
        ),
        ('methods = ["saliency"]', 'methods = ["saliencyy"]', "[explain].methods[0]", "'saliency'"),
        ('dataset = "digits8x8"', 'dataset = "digits8"', "[data].dataset", "'digits8x8'"),
        (
            'quantus = "Sparseness"',
            'quantus = "Sparsenes"',
            "[evaluate].metrics[0].quantus",
            "did you mean 'sparseness'",
        ),
        # Quantus metrics a pipeline cannot score: no score per sample, or mosaics as inputs
        (
            'quantus = "Sparseness"',
            'quantus = "SensitivityN"',
            "[evaluate].metrics[0].quantus",
            "'SensitivityN' is not available: Quantus' SensitivityN gives no score per sample",
        ),
        (
            'quantus = "Sparseness"',
            'quantus = "Focus"',
            "[evaluate].metrics[0].quantus",
            "quantus_focus scores 2x2 mosaics",
        ),
        ("samples = 12", "sampels = 12", "[data].sampels", "did you mean 'samples'"),
        (
            'sigma = "@calibration.ng.sigma"',
            'sigma = "@calibration.gn.sigma"',
            "[explain].enhancers[1].options.sigma",
            "'gn'; known: ng",
        ),
        (
            "n_samples = 3,",
            "n_sample = 3,",
            "[explain].enhancers[1].options.n_sample",
            "'n_samples'",
        ),
        # wrong types
        (
            "samples = 12",
            'samples = "twelve"',
            "[data].samples",
            "expected an integer, got a string",
        ),
        ("samples = 12", "samples = 0", "[data].samples", "expected an integer >= 1"),
        ('methods = ["saliency"]', 'methods = "saliency"', "[explain].methods", "expected a list"),
        ("seed = 3", "seed = 3.5", "[pipeline].seed", "expected an integer"),
        (
            "samples = 12",
            "samples = 12\nseed = 1.5",
            "[data].seed",
            "expected an integer, got a number 1.5",
        ),
        ("samples = 12", "samples = 12\nspilt = 'test'", "[data].spilt", "'split'"),
        (
            '[model]\nname = "small_cnn"',
            '[model]\nname = "small_cnn"\nrecipe = { epochz = 1 }',
            "[model].recipe",
            "epochz: not a recipe option",
        ),
        (
            '[model]\nname = "small_cnn"',
            '[model]\nname = "small_cnn"\nrecipe = { model_options = { widht = 8 } }',
            "[model].recipe.model_options.widht",
            "did you mean 'width'",
        ),
        (
            '[model]\nname = "small_cnn"',
            '[model]\nname = "small_resnet"\nrecipe = { model_options = { blocks = 4 } }',
            "[model].recipe.model_options",
            "blocks: expected one of",
        ),
        ("[report]\n", "[reprot]\n", "[reprot]", "did you mean 'report'"),
        (
            "params = { nr_runs = 3, subset_size = 8 }",
            "params = { nr_run = 3, subset_size = 8 }",
            "[evaluate].metrics[2].params.nr_run",
            "'nr_runs'",
        ),
        ('perturber = "weight"', 'perturber = "weights"', "[calibration.ng].perturber", "one of"),
        (
            'sigma = "@calibration.ng.sigma"',
            'sigma = "@calibration.ng.sigma*x"',
            "[explain].enhancers[1].options.sigma",
            "optionally scaled",
        ),
        (
            'sigma = "@calibration.ng.sigma"',
            'sigma = "@calibration.ng.beta"',
            "[explain].enhancers[1].options.sigma",
            "'@calibration.<name>.sigma'",
        ),
        # missing fields and tables
        ('[model]\nname = "small_cnn"', "[model]", "[model].name", "missing"),
        ('[model]\nname = "small_cnn"', "", "[model]", "missing table"),
        (
            'label = "sparseness"\nquantus = "Sparseness"',
            'label = "sparseness"',
            "[evaluate].metrics[0]",
            "exactly one of",
        ),
        # output paths escaping the output directory
        (
            "grid_samples = 2",
            'grid_samples = 2\nmarkdown = "../report.md"',
            "[report].markdown",
            "leaves it",
        ),
        (
            "grid_samples = 2",
            'grid_samples = 2\njson = "/tmp/results.json"',
            "[report].json",
            "absolute path",
        ),
        (
            "grid_samples = 2",
            'grid_samples = 2\nfigures = "a/../../b"',
            "[report].figures",
            "leaves it",
        ),
        # output paths that clash: one inside another
        (
            "grid_samples = 2",
            'grid_samples = 2\nmarkdown = "figures/report.md"',
            "[report].figures",
            "not inside",
        ),
        (
            "grid_samples = 2",
            'grid_samples = 2\nmarkdown = "./out.md"\njson = "out.md"',
            "[report].json",
            "distinct",
        ),
        # attack scores the attack does not compute
        (
            "[report]\n",
            '[[evaluate.attacks]]\nname = "ifia"\nscores = ["topk"]\n\n[report]\n',
            "[evaluate].attacks[0].scores[0]",
            "'topk_intersection'",
        ),
        # expectations naming things that do not exist
        ('best = "Baseline"', 'best = "Basline"', "[report].expect[0].best", "'Baseline'"),
    ],
)
def test_broken_file_fails_before_any_work(
    tmp_path: Path, old: str, new: str, field: str, expected: str
) -> None:
    path = write(tmp_path, broken(old, new))
    with pytest.raises(PipelineError) as info:
        Pipeline.from_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {field}"), message
    assert expected in message, message
    assert info.value.field == field
    assert info.value.file == str(path)


class _Undirected:
    """A test plugin: a map metric whose direction nobody knows."""

    @staticmethod
    @hookimpl
    def wrapgrad_metrics():
        yield MetricSpec(
            name="undirected",
            factory=lambda: lambda a, mask: a.flatten(1).mean(1),
            requires="mask",
        )


@pytest.mark.usefixtures("no_work")
def test_expectation_needs_a_metric_direction(tmp_path: Path, registry) -> None:
    registry.register(_Undirected(), name="undirected")
    raw = tomllib.loads(GOOD)
    raw["data"] = {"dataset": "cmnist", "samples": 4}
    raw["evaluate"]["metrics"] = [{"label": "u", "name": "undirected", "masks": ["digit"]}]
    raw["report"]["expect"] = [{"metric": "u", "best": "Baseline"}]
    with pytest.raises(PipelineError, match="higher_is_better") as info:
        Pipeline.from_dict(raw)
    assert info.value.field == "[report].expect[0].metric"
    # stating the direction in the file makes it valid again
    raw["evaluate"]["metrics"][0]["higher_is_better"] = True
    assert Pipeline.from_dict(raw).config.tables["evaluate"].metrics[0].higher_is_better


@pytest.mark.usefixtures("no_work")
@pytest.mark.parametrize("name", ["report.md", "figures", "results.json"])
def test_symlink_out_of_the_output_directory_is_refused_before_work(
    tmp_path: Path, name: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(outside / name, target_is_directory=name == "figures")
    pipe = Pipeline.from_file(write(tmp_path, GOOD))
    with pytest.raises(WrapgradValueError, match="inside the output directory"):
        pipe.run(out, progress=False)  # no_work: any data loading or training fails differently
    assert list(outside.iterdir()) == []


def test_unknown_mask_fails_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wrapgrad_data
    import wrapgrad_data.cache as cache

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained before checking the mask names")

    for module in (wrapgrad_data, cache):  # data loading is allowed, training is not
        monkeypatch.setattr(module, "pretrained", forbidden)
    monkeypatch.setattr(cache, "train", forbidden)
    raw = tomllib.loads(GOOD)
    raw["data"] = {"dataset": "cmnist", "samples": 4, "options": {"limit": 8}}
    raw["calibration"] = {}
    raw["explain"]["enhancers"] = [{"label": "Baseline"}]
    raw["evaluate"]["metrics"] = [
        {"label": "loc", "quantus": "RelevanceRankAccuracy", "masks": ["digit", "sqare"]}
    ]
    raw["report"] = {}
    # cmnist declares its masks in its registry record, so the file fails when it is read.
    with pytest.raises(PipelineError, match=r"expected one of the data set's masks") as info:
        Pipeline.from_dict(raw)
    assert info.value.field == "[evaluate].metrics[0].masks[1]"
    assert "'digit', 'square'" in str(info.value)
    assert "did you mean 'square'" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_run_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--out", "--smoke", "--quiet", "--check", "FILE".lower()):
        assert flag in text


def test_reference_is_generated_from_the_records() -> None:
    """docs/pipeline-reference.md is what the step records say (regenerate it with
    ``python -m wrapgrad_pipeline.reference``), and it has a row for every field of every table."""
    import attrs
    from wrapgrad_pipeline.plan import PipelineTable
    from wrapgrad_pipeline.reference import main, render

    path = Path(__file__).resolve().parents[1] / "docs" / "pipeline-reference.md"
    assert path.read_text(encoding="utf-8") == render(), (
        "stale: python -m wrapgrad_pipeline.reference"
    )
    assert main([str(path), "--check"]) == 0
    text = render()
    records = [PipelineTable, *(s.schema for s in get_registry().specs("pipeline_step").values())]
    seen = set()
    while records:
        cls = records.pop()
        if cls is None or cls in seen:
            continue
        seen.add(cls)
        for f in attrs.fields(cls):
            assert f"| `{f.name}` |" in text, (cls.__name__, f.name)
            assert f.metadata.get("doc"), f"{cls.__name__}.{f.name} has no doc"
        records += [
            t
            for f in attrs.fields(attrs.resolve_types(cls))
            for t in getattr(f.type, "__args__", ())
            if isinstance(t, type) and attrs.has(t)
        ]
    assert len(seen) >= 10  # pipeline, data, model, calibration, explain(+enhancers), ...


@pytest.mark.usefixtures("no_work")
def test_unknown_name_error_carries_suggestions(tmp_path: Path) -> None:
    path = write(tmp_path, broken('dataset = "digits8x8"', 'dataset = "cmnsit"'))
    with pytest.raises(PipelineNameError) as info:
        Pipeline.from_file(path)
    assert isinstance(info.value, UnknownNameError)
    assert "cmnist" in info.value.suggestions


@pytest.mark.usefixtures("no_work")
def test_cli_refuses_broken_file_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, broken("grid_samples = 2", 'grid_samples = 2\nmarkdown = "../x.md"'))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "[report].markdown" in err
    assert str(path) in err
    assert not out.exists()


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "\n[data\n")
    with pytest.raises(PipelineError, match=r"p\.toml: file: expected valid TOML"):
        Pipeline.from_file(path)


def test_check_flag_validates_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD)
    assert main(["run", str(path), "--check"]) == 0
    assert "valid pipeline 'tiny'" in capsys.readouterr().out


def test_threads_flag_sets_torchs_threads_and_refuses_nonsense(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(["run", str(path), "--check", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit):
            main(["run", str(path), "--check", "--threads", bad])
        assert "--threads: expected a whole number >= 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("report.md", True),
        ("figs/sub/x.png", True),
        ("./a/../b.md", True),
        ("..", False),
        ("../b", False),
        ("a/../../b", False),
        ("/abs/path", False),
        ("C:\\x\\y.md", False),
        ("..\\up.md", False),
        (".", False),
        ("", False),
    ],
)
def test_check_output_path(value: str, ok: bool) -> None:
    if ok:
        assert check_output_path(value) == value
    else:
        with pytest.raises(PipelineError):
            check_output_path(value)


def test_every_example_is_valid() -> None:
    assert {p.name for p in EXAMPLES} >= {
        "noisegrad_cmnist.toml",
        "any_captum_method.toml",
        "ifia_attack.toml",
    }
    for path in EXAMPLES:
        pipe = Pipeline.from_file(path)
        assert pipe.config.name == path.stem


def test_smoke_shrinks_every_size() -> None:
    config = Pipeline.from_file(
        next(p for p in EXAMPLES if p.name == "noisegrad_cmnist.toml")
    ).config
    small = shrink(config)
    t = small.tables
    assert t["data"].samples <= 6 < config.tables["data"].samples
    assert t["model"].recipe["epochs"] == 1
    assert t["model"].recipe["dataset_options"]["limit"] == 256
    assert all(c.samples <= 64 and c.options["draws"] <= 2 for c in t["calibration"].values())
    assert all(c.options["chance"] == 0.0 for c in t["calibration"].values())  # injected
    robustness = next(m for m in t["evaluate"].metrics if m.label == "robustness")
    assert robustness.params["nr_samples"] <= 2
    assert robustness.samples <= 6
    faithfulness = next(m for m in t["evaluate"].metrics if m.label == "faithfulness")
    assert faithfulness.params["nr_runs"] == 2
    assert faithfulness.params["subset_size"] == 16
    assert t["explain"].replicates == 2 < config.tables["explain"].replicates
    assert t["sweep"].samples <= 6
    assert all(len(c.scales) <= 2 for c in t["sweep"].curves)
    reg = get_registry()
    # Every component's declared caps hold, whoever declares them.
    for e in t["explain"].enhancers:
        if e.name:
            for key, cap in reg.get("enhancer", e.name).smoke_caps().items():
                assert e.options[key] <= cap
    for m, opts in t["explain"].method_options.items():
        for key, cap in reg.get("explainer", m).smoke_caps().items():
            assert opts[key] <= cap


class _Capped:
    """A test plugin: an enhancer and an explainer that declare smoke caps; both take n_samples."""

    @staticmethod
    @hookimpl
    def wrapgrad_enhancers():
        def capped_grad(
            n_samples: int = 50, n_models: int = 50, seed: int = 0, progress: bool = False
        ):
            raise AssertionError("never built: only shrunk")

        yield EnhancerSpec(
            name="capped_grad", factory=capped_grad, smoke={"n_samples": 2, "n_models": 3}
        )

    @staticmethod
    @hookimpl
    def wrapgrad_explainers():
        def sampled(n_samples: int = 5, steps: int = 9):
            raise AssertionError("never built: only shrunk")

        yield ExplainerSpec(
            name="sampled_method", factory=sampled, smoke={"steps": 2, "n_samples": 1}
        )


@pytest.mark.usefixtures("no_work")
def test_smoke_applies_declared_caps_and_leaves_shared_options_alone(registry) -> None:
    """Given numbers are capped, absent options are set to the cap, except an option another
    part of the same wrap() call takes (setting it would hand it to the wrong part)."""
    from wrapgrad_pipeline.steps.explain import ExplainStep, ExplainTable

    registry.register(_Capped(), name="capped")
    table = ExplainTable(
        methods=("sampled_method", "saliency"),
        enhancers=(
            ExplainTableEnhancer(
                label="C", name="capped_grad", options={"n_models": 40, "seed": 7}
            ),
        ),
    )
    small = ExplainStep().shrink(table)
    # the enhancer: n_models given 40 -> 3; n_samples absent but the method takes it too: unset
    assert dict(small.enhancers[0].options) == {"n_models": 3, "seed": 7}
    # the method: steps absent -> 2; n_samples is the enhancer's too: unset
    assert dict(small.method_options["sampled_method"]) == {"steps": 2}
    assert "saliency" not in small.method_options or not small.method_options["saliency"]


# -- running ------------------------------------------------------------------------------------
@pytest.mark.usefixtures("shared_cache")
def test_pipeline_in_code_runs_and_round_trips(tmp_path: Path) -> None:
    pipe = Pipeline.from_dict(tomllib.loads(GOOD))
    run = pipe.run(tmp_path / "out", smoke=True, progress=False)
    results = run.results
    # results.json round-trips into the very same report
    assert run.report_path.read_text(encoding="utf-8") == render_markdown(
        load_results(tmp_path / "out")
    )
    assert json.loads(run.results_path.read_text()) == results
    # the calibrated level is what the NG enhancer ran with
    ng = results["enhancer_settings"]["NG"]["options"]["sigma"]
    assert isinstance(ng, float)
    assert ng == results["calibration"]["ng"]["sigma"]
    half = results["enhancer_settings"]["NGhalf"]["options"]["sigma"]
    assert half == pytest.approx(0.5 * ng)  # "@calibration.ng.sigma*0.5"
    scores = results["scores"]["saliency"]
    n = results["data"]["samples"]
    assert n == 6
    for label in ("Baseline", "NG", "NG0"):
        vals = scores[label]["sparseness"]
        assert len(vals) == n
        assert all(math.isfinite(v) for v in vals)
        assert len(scores[label]["complexity"]) == 4  # its own `samples`
        # Quantus' aggregate (one mean) is never taken for per-sample scores
        assert len(scores[label]["faithfulness"]) == 5
    # NoiseGrad at sigma = 0 is the plain method: identical maps, identical Gini indices.
    assert scores["NG0"]["sparseness"] == pytest.approx(scores["Baseline"]["sparseness"], abs=1e-9)
    assert results["versions"]["torch"] == torch.__version__.split("+")[0] or results["versions"][
        "torch"
    ].startswith(torch.__version__.split("+")[0])
    assert results["pipeline"]["text"] == pipe.text
    assert results["seeds"]["pipeline"] == 3
    # figures: a grid per method and a bar chart per metric, all PNG, all inside the output dir
    pngs = [tmp_path / "out" / f["path"] for f in results["figures"]]
    assert len(pngs) == 4  # one grid (one method), one bar chart per metric
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.resolve().is_relative_to((tmp_path / "out").resolve())
    # nothing half-written is left behind
    assert not list((tmp_path / "out").rglob("*.tmp"))


@pytest.mark.usefixtures("shared_cache")
def test_same_seed_same_results(tmp_path: Path) -> None:
    raw = tomllib.loads(GOOD)
    raw["calibration"] = {}
    raw["explain"]["enhancers"] = [
        {"label": "Baseline"},
        {"label": "NG", "name": "noisegrad", "options": {"n_samples": 2, "sigma": 0.3}},
    ]
    raw["report"]["expect"] = []
    raw["report"]["make_figures"] = False
    a = Pipeline.from_dict(raw).run(tmp_path / "a", smoke=True, progress=False).results
    b = Pipeline.from_dict(raw).run(tmp_path / "b", smoke=True, progress=False).results
    assert a["scores"] == b["scores"]
    assert a["scores"]["saliency"]["NG"] != a["scores"]["saliency"]["Baseline"]
    raw["pipeline"]["seed"] = 4
    c = Pipeline.from_dict(raw).run(tmp_path / "c", smoke=True, progress=False).results
    assert c["scores"]["saliency"]["NG"] != a["scores"]["saliency"]["NG"]


def _weights_pipeline(tmp_path: Path, model: torch.nn.Module, table: dict) -> Pipeline:
    """A plain-map pipeline on ``model``'s state dict, saved as ``w.pt`` beside the pipeline
    file (weights are relative to it), with ``[model]`` = ``table`` + ``weights = "w.pt"``."""
    torch.save(model.state_dict(), tmp_path / "w.pt")
    raw = tomllib.loads(GOOD)
    raw["model"] = {**table, "weights": "w.pt"}
    raw["calibration"] = {}
    raw["explain"]["enhancers"] = [{"label": "Baseline"}]
    raw["report"] = {"make_figures": False}
    pipe = Pipeline.from_dict(raw)
    pipe.path = tmp_path / "p.toml"
    return pipe


def test_weights_file_is_loaded_safely(tmp_path: Path) -> None:
    from wrapgrad_data import load_dataset, small_cnn

    model = small_cnn(1, 10)
    pipe = _weights_pipeline(tmp_path, model, {"name": "small_cnn"})
    results = pipe.run(tmp_path / "out", progress=False).results
    # The split is not the pipeline seed's (3) but the one the weights are taken to be trained
    # on: [data].split_seed, default 0 (recipe-trained models declare theirs).
    assert results["data"]["split_seed"] == 0
    test = load_dataset("digits8x8", split="test", seed=0)
    with torch.no_grad():
        expected = float((model.eval()(test.inputs).argmax(1) == test.labels).float().mean())
    assert results["model"]["test_accuracy"] == pytest.approx(expected)
    (tmp_path / "w.pt").write_bytes(b"not a state dict")
    with pytest.raises(WrapgradValueError, match=r"\[model\]\.weights"):
        pipe.run(tmp_path / "out2", progress=False)


def test_weights_file_is_loaded_into_the_model_its_recipe_options_build(tmp_path: Path) -> None:
    # A two-block small_resnet's state dict loads only into a two-block model: [model].weights
    # builds the model with [model].recipe.model_options.
    from wrapgrad_data import small_resnet

    model = small_resnet(1, 10, blocks=2)
    three = _weights_pipeline(tmp_path, model, {"name": "small_resnet"})
    with pytest.raises(WrapgradValueError, match=r"(?s)\[model\]\.weights.*Missing.*layer1\.conv1"):
        three.run(tmp_path / "three", progress=False)  # the default, three blocks: refused
    options = {"name": "small_resnet", "recipe": {"model_options": {"blocks": 2}}}
    two = _weights_pipeline(tmp_path, model, options)
    results = two.run(tmp_path / "two", progress=False).results
    assert results["model"]["parameters"] == sum(p.numel() for p in model.parameters())


def test_report_command_prints_the_same_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shared_cache: Path
) -> None:
    path = write(tmp_path, GOOD)
    out = tmp_path / "run"
    assert main(["run", str(path), "--smoke", "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert captured.err == ""  # --quiet: no progress bars
    assert "# tiny" not in printed  # --quiet: no report echo, only where it is
    assert f"report:  {out / 'report.md'}" in printed
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out == (out / "report.md").read_text(encoding="utf-8")
    assert main(["report", str(tmp_path)]) == 2  # no results.json there


# robust_training_mnist.toml and neural_sde_cmnist.toml have their own smoke tests
# (tests/test_robust_pipeline.py, tests/test_sde_pipeline.py), also with built-in plugins only
OWN_SMOKE_TESTS = {"robust_training_mnist.toml", "neural_sde_cmnist.toml"}
SMOKED_HERE = [p for p in EXAMPLES if p.name not in OWN_SMOKE_TESTS]


@pytest.mark.parametrize("example", SMOKED_HERE, ids=lambda p: p.stem)
def test_example_runs_in_smoke_mode(
    example: Path, tmp_path: Path, shared_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After the README's set-up alone: built-in plugins only, none of the test-only ones (the
    # example plugin under examples/plugin is installed for its own tests).
    monkeypatch.setenv("WRAPGRAD_DISABLE_PLUGIN_AUTOLOAD", "1")
    out = tmp_path / "out"
    with use_registry(Registry()):
        assert main(["run", str(example), "--smoke", "--out", str(out), "--quiet"]) == 0
    results = load_results(out)
    assert results["smoke"] is True
    assert (out / "report.md").read_text(encoding="utf-8") == render_markdown(results)
    n = results["data"]["samples"]
    assert results["metrics"], "every example evaluates something"
    cells = finite = 0
    for method in results["methods"]:
        for label in results["enhancers"]:
            for m in results["metrics"]:
                if m.get("methods") and method not in m["methods"]:
                    assert m["key"] not in results["scores"][method][label]
                    continue
                vals = results["scores"][method][label][m["key"]]
                assert 0 < len(vals) <= n
                # the seed-averaged scores are the mean of the per-seed ones
                rows = results["scores_by_seed"][method][label][m["key"]]
                assert all(len(r) == len(vals) for r in rows)
                cells += 1
                finite += any(v is not None for v in vals)
    # A one-epoch smoke model gives some degenerate (e.g. all-zero) maps that a metric cannot
    # score; those cells are n/a (with the error recorded), the others must be computed.
    assert finite >= 0.75 * cells, (finite, cells, results["errors"])
    for err in results["errors"]:
        assert err["error"]
        assert err["method"] in results["methods"]
    for fig in results["figures"]:
        assert (out / fig["path"]).read_bytes()[:4] == b"\x89PNG"


# -- steps from plugins -------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class TwinTable:
    """A test step's table: one more (untrained) model."""

    label: str = attrs.field(metadata={"doc": "the model's label"})
    seed: int = attrs.field(default=0, metadata={"doc": "its initialisation seed"})


class TwinStep(AddModelStep):
    """A test plugin's step adding a model (untrained), as a training step does."""

    def label(self, table: TwinTable) -> tuple[str, str]:
        return table.label, "[twin].label"

    def build(self, table: TwinTable, context) -> tuple[torch.nn.Module, dict]:
        data = context.data
        with torch.random.fork_rng():
            torch.manual_seed(table.seed)
            model = (
                get_registry()
                .get("model", "small_cnn")
                .factory(
                    in_channels=int(data.inputs.shape[1]), num_classes=int(data.dataset.num_classes)
                )
            )
        return model, {"name": "small_cnn", "source": "random"}


def _two_models() -> dict:
    raw = tomllib.loads(GOOD)
    raw["twin"] = {"label": "random", "seed": 1}
    raw["explain"]["enhancers"] = raw["explain"]["enhancers"][:2]  # Baseline, NG
    raw["evaluate"]["metrics"] = raw["evaluate"]["metrics"][:1]  # sparseness
    raw["report"] = {
        "make_figures": False,
        "expect": [{"metric": "sparseness", "best": "random/NG"}],
    }
    return raw


@pytest.mark.usefixtures("no_work")
def test_a_plugin_step_adds_a_table_and_models(registry) -> None:
    registry.register(step_plugin("twin", TwinStep, TwinTable), name="twin")
    config = Pipeline.from_dict(_two_models()).config
    # ordered by needs/provides: the twin step provides models, so it runs before calibration
    assert config.steps.index("twin") < config.steps.index("calibration")
    assert config.steps[0] == "data"
    assert config.steps[-1] == "report"
    assert config.variants == ("small_cnn/Baseline", "small_cnn/NG", "random/Baseline", "random/NG")
    # expectations name variant labels: an enhancer label alone is no variant any more
    raw = _two_models()
    raw["report"]["expect"] = [{"metric": "sparseness", "best": "Baseline"}]
    with pytest.raises(PipelineNameError, match="variant label 'Baseline'") as info:
        Pipeline.from_dict(raw)
    assert "random/Baseline" in info.value.suggestions
    # its table is checked like the built-in ones
    raw = _two_models()
    raw["twin"]["seed"] = "one"
    with pytest.raises(PipelineError, match=r"\[twin\]\.seed: expected an integer, got a string"):
        Pipeline.from_dict(raw)
    raw["twin"] = {"label": "small_cnn"}
    with pytest.raises(PipelineError, match=r"\[twin\]\.label: expected a model label not used"):
        Pipeline.from_dict(raw)


@pytest.mark.usefixtures("shared_cache")
def test_every_model_and_enhancer_variant_is_explained_and_scored(tmp_path: Path, registry) -> None:
    registry.register(step_plugin("twin", TwinStep, TwinTable), name="twin")
    results = (
        Pipeline.from_dict(_two_models()).run(tmp_path / "out", smoke=True, progress=False).results
    )
    variants = ["small_cnn/Baseline", "small_cnn/NG", "random/Baseline", "random/NG"]
    assert results["enhancers"] == variants
    assert results["variants"]["random/NG"] == {"model": "random", "enhancer": "NG"}
    assert set(results["models"]) == {"small_cnn", "random"}
    # one calibration per model, each variant's NG runs with its own model's level
    assert set(results["calibration"]) == {"small_cnn/ng", "random/ng"}
    for model in ("small_cnn", "random"):
        sigma = results["enhancer_settings"][f"{model}/NG"]["options"]["sigma"]
        assert sigma == results["calibration"][f"{model}/ng"]["sigma"]
    scores = results["scores"]["saliency"]
    for v in variants:
        assert len(scores[v]["sparseness"]) == results["data"]["samples"]
    # different models give different maps, hence different scores
    assert scores["random/Baseline"]["sparseness"] != scores["small_cnn/Baseline"]["sparseness"]
    md = render_markdown(results)
    assert "- model: random: `small_cnn` (random)" in md
    assert "`saliency`, sparseness: best: random/NG:" in md


class _Needy:
    @staticmethod
    @hookimpl
    def wrapgrad_pipeline_steps():
        yield PipelineStepSpec(
            name="needy", factory=TwinStep, table="needy", schema=TwinTable, needs=("checkpoints",)
        )


@pytest.mark.usefixtures("no_work")
def test_a_need_nobody_provides_is_refused(registry) -> None:
    registry.register(_Needy(), name="needy")
    raw = tomllib.loads(GOOD)
    raw["needy"] = {"label": "x"}
    with pytest.raises(PipelineError, match="needs checkpoints, which no installed pipeline step"):
        Pipeline.from_dict(raw)
    del raw["needy"]  # a step whose table is absent does not run
    assert "needy" not in Pipeline.from_dict(raw).config.steps


def test_order_steps_follows_needs_and_refuses_cycles() -> None:
    from wrapgrad_pipeline.plan import order_steps

    def spec(name: str, needs: tuple = (), provides: tuple = ()) -> PipelineStepSpec:
        return PipelineStepSpec(name=name, factory=TwinStep, needs=needs, provides=provides)

    steps = {
        "a_report": spec("a_report", needs=("scores",)),
        "b_score": spec("b_score", needs=("models",), provides=("scores",)),
        "c_train": spec("c_train", provides=("models",)),
        "d_more": spec("d_more", needs=("models",), provides=("models",)),
    }
    assert order_steps(steps) == ["c_train", "d_more", "b_score", "a_report"]
    steps["c_train"] = spec("c_train", needs=("scores",), provides=("models",))
    with pytest.raises(PipelineError, match="no cycle"):
        order_steps(steps)


def test_deprecated_aliases_resolve_through_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    import wrapgrad_pipeline
    import wrapgrad_quantus

    import wrapgrad

    for name, module in (
        ("Pipeline", wrapgrad_pipeline),
        ("quantus_explain", wrapgrad_quantus),
        ("quantus_metric", wrapgrad_quantus),
    ):
        monkeypatch.delitem(wrapgrad.__dict__, name, raising=False)  # not cached yet
        with pytest.warns(DeprecationWarning, match=f"from {module.__name__} import {name}"):
            value = getattr(wrapgrad, name)
        assert value is getattr(module, name)


def test_known_maps_serve_the_computed_maps_and_explain_anything_else(cnn, images, labels) -> None:
    """Model-based metrics and attacks get the maps the explain step computed for the evaluated
    inputs (no second explanation) and a real explanation for any other input or target."""
    from wrapgrad_pipeline.steps.evaluate import KnownMaps

    calls: list[torch.Tensor] = []

    def explain(x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        calls.append(x)
        return x * 2

    explain.model = cnn  # type: ignore[attr-defined]
    maps = torch.full_like(images, 7.0)
    known = KnownMaps(explain, images, labels, maps)
    torch.testing.assert_close(known(images, target=labels.clone()), maps)
    assert calls == []
    other = images.clone()
    torch.testing.assert_close(known(other, target=labels), other * 2)
    torch.testing.assert_close(known(images, target=labels.flip(0)), images * 2)
    assert len(calls) == 2
    assert known.model is cnn  # everything else is the wrapped explain's
    known(images, target=labels).add_(1)  # a copy: the served maps stay as computed
    torch.testing.assert_close(known(images, target=labels), maps)


class _Counting:
    """A test plugin: an explainer that takes n_samples, as GradientShap does."""

    seen: ClassVar[list[int]] = []

    @staticmethod
    @hookimpl
    def wrapgrad_explainers():
        def counting(n_samples: int = 1):
            def explain(model, inputs, target=None):
                _Counting.seen.append(n_samples)
                return inputs * n_samples

            return explain

        yield ExplainerSpec(name="counting", factory=counting)


@pytest.mark.usefixtures("shared_cache")
def test_an_option_both_parts_take_goes_where_the_file_puts_it(tmp_path: Path, registry) -> None:
    registry.register(_Counting(), name="counting")
    _Counting.seen.clear()
    raw = tomllib.loads(GOOD)
    raw["calibration"] = {}
    raw["explain"] = {
        "methods": ["counting"],
        "method_options": {"counting": {"n_samples": 3}},
        "enhancers": [
            {"label": "Baseline"},
            {"label": "SG", "name": "smoothgrad", "options": {"n_samples": 2, "noise_level": 0.1}},
        ],
    }
    raw["evaluate"] = {"metrics": [{"label": "sparseness", "quantus": "Sparseness"}]}
    raw["report"] = {"make_figures": False}
    Pipeline.from_dict(raw).run(tmp_path / "out", progress=False)
    # the method got its 3 every time (Baseline and inside SmoothGrad), and SmoothGrad its 2:
    # wrap() would refuse n_samples given without saying which part gets it
    assert _Counting.seen
    assert set(_Counting.seen) == {3}


def test_level_references_before_0_1_are_read_with_a_deprecation() -> None:
    from wrapgrad_pipeline.levels import LevelReference

    where = "f.toml: [explain].enhancers[1].options.noise_level"
    ref = LevelReference.parse("@calibration.sg.sigma*0.5")
    assert ref is not None
    with pytest.warns(DeprecationWarning, match=r"'@calibration\.sg\.sigma\*0\.5' is deprecated"):
        new = ref.current(("noise_level",), where)  # an input calibration's sigma held alpha_SG
    assert new.text() == "@calibration.sg.noise_level*0.5"
    alpha = LevelReference.parse("@calibration.sg.alpha")
    assert alpha is not None
    with pytest.warns(
        DeprecationWarning, match=r"f\.toml: .*write '@calibration\.sg\.noise_level'"
    ):
        assert alpha.current(("noise_level",), where).text() == "@calibration.sg.noise_level"
    weight = LevelReference.parse("@calibration.ng.sigma")
    assert weight is not None
    assert weight.current(("sigma",), where) is weight  # today's name: no warning
