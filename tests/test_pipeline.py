"""Pipeline files: validation before any work, the runner, the CLI, and every example end to end."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from wrapgrad.cli import main
from wrapgrad.errors import UnknownNameError, WrapgradValueError
from wrapgrad.pipeline import Pipeline, shrink
from wrapgrad.pipeline_schema import PipelineError, PipelineNameError, check_output_path
from wrapgrad.report import load_results, render_markdown

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
            "'Sparseness'",
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


@pytest.mark.usefixtures("no_work")
def test_expectation_needs_a_metric_direction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wrapgrad.pipeline_schema as schema

    monkeypatch.setattr(schema, "_quantus_direction", lambda cls: None)
    with pytest.raises(PipelineError, match="higher_is_better") as info:
        Pipeline.from_file(write(tmp_path, GOOD))
    assert info.value.field == "[report].expect[0].metric"
    # stating the direction in the file makes it valid again
    fixed = broken('quantus = "Sparseness"', 'quantus = "Sparseness"\nhigher_is_better = true')
    assert Pipeline.from_file(write(tmp_path, fixed, "ok.toml")).config.metrics[0].higher_is_better


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

    from wrapgrad.pipeline import tomllib

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


def test_reference_documents_exactly_the_schema_fields() -> None:
    """docs/pipeline-reference.md has a table per pipeline table; its rows are the fields."""
    import re

    from wrapgrad.pipeline_schema import FIELDS

    doc = (Path(__file__).resolve().parents[1] / "docs" / "pipeline-reference.md").read_text()
    documented: dict[str, set[str]] = {}
    table = None
    for line in doc.splitlines():
        head = re.match(r"^## `\[(.+)\]`", line) or re.match(r"^`\[\[(.+)\]\]`", line)
        if head:
            table = head.group(1)
            documented.setdefault(table, set())
        elif line.startswith("## "):
            table = None
        elif table and (row := re.match(r"^\| `(\w+)` \|", line)):
            documented[table].add(row.group(1))
    # [evaluate] is documented through its two array tables
    assert documented.pop("evaluate") == set()
    expected = {k: set(v) for k, v in FIELDS.items() if k != "evaluate"}
    assert documented == expected


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
    assert small.data.samples <= 6 < config.data.samples
    assert small.model.recipe["epochs"] == 1
    assert small.model.recipe["dataset_options"]["limit"] == 256
    for e in small.explain.enhancers:
        for key in ("n_samples", "n_models"):
            if key in e.options:
                assert e.options[key] <= 2
    assert all(c.samples <= 64 and c.options["draws"] <= 2 for c in small.calibration.values())
    assert small.explain.method_options["integrated_gradients"]["n_steps"] <= 4


# -- running ------------------------------------------------------------------------------------
@pytest.mark.usefixtures("shared_cache")
def test_pipeline_in_code_runs_and_round_trips(tmp_path: Path) -> None:
    from wrapgrad.pipeline import tomllib

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
    from wrapgrad.pipeline import tomllib

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


def test_weights_file_is_loaded_safely(tmp_path: Path) -> None:
    from wrapgrad_data import load_dataset, small_cnn

    from wrapgrad.pipeline import tomllib

    model = small_cnn(1, 10)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    raw = tomllib.loads(GOOD)
    raw["model"] = {"name": "small_cnn", "weights": "w.pt"}
    raw["calibration"] = {}
    raw["explain"]["enhancers"] = [{"label": "Baseline"}]
    raw["report"] = {"make_figures": False}
    path = tmp_path / "p.toml"
    pipe = Pipeline.from_dict(raw)
    pipe.path = path  # weights are relative to the pipeline file
    results = pipe.run(tmp_path / "out", progress=False).results
    test = load_dataset("digits8x8", split="test", seed=3)  # [pipeline].seed = 3
    with torch.no_grad():
        expected = float((model.eval()(test.inputs).argmax(1) == test.labels).float().mean())
    assert results["model"]["test_accuracy"] == pytest.approx(expected)
    (tmp_path / "w.pt").write_bytes(b"not a state dict")
    with pytest.raises(WrapgradValueError, match=r"\[model\]\.weights"):
        pipe.run(tmp_path / "out2", progress=False)


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


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_in_smoke_mode(example: Path, tmp_path: Path, shared_cache: Path) -> None:
    out = tmp_path / "out"
    assert main(["run", str(example), "--smoke", "--out", str(out), "--quiet"]) == 0
    results = load_results(out)
    assert results["smoke"] is True
    assert (out / "report.md").read_text(encoding="utf-8") == render_markdown(results)
    n = results["data"]["samples"]
    keys = [m["key"] for m in results["metrics"]]
    assert keys, "every example evaluates something"
    cells = finite = 0
    for method in results["methods"]:
        for label in results["enhancers"]:
            for key in keys:
                vals = results["scores"][method][label][key]
                assert 0 < len(vals) <= n
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
