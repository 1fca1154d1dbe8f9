"""The pipeline's ``train`` step (plugin ``wrapgrad_robust``) and the FAR Table 1 example.

The example runs end to end in ``--smoke`` mode once per module (about half a minute); the
other tests check the step's logic without training anything big: which split the models train
on, plugin objectives by name, errors that name the field, the smoke caps, the report's groups
over training seeds, and the accuracy metrics.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from wrapgrad_pipeline import groups
from wrapgrad_pipeline.report import load_results, render_markdown
from wrapgrad_pipeline.runner import Pipeline, shrink, tomllib
from wrapgrad_pipeline.schema import PipelineError, PipelineNameError
from wrapgrad_robust.jobs import run_job
from wrapgrad_robust.metrics import NaturalAccuracy, PGDAccuracy
from wrapgrad_robust.step import SMOKE, TrainStep

from wrapgrad import hookimpl
from wrapgrad.cli import main
from wrapgrad.records import ObjectiveSpec
from wrapgrad.registry import Registry, use_registry

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "robust_training_mnist.toml"
LABELS = ["Nat", "Adv", "IG-NORM", "IG-SUM-NORM", "AAT", "AdvAAT"]
FAR = {"Nat": 0.994, "Adv": 0.989, "AAT": 0.984, "AdvAAT": 0.987}  # FAR Table 1, NA


def example() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation must not train or load anything."""
    import wrapgrad_data
    import wrapgrad_data.cache as cache
    import wrapgrad_robust.jobs as jobs

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("validation trained or loaded something")

    for module, name in ((cache, "pretrained"), (cache, "train"), (wrapgrad_data, "pretrained")):
        monkeypatch.setattr(module, name, forbidden)
    monkeypatch.setattr(jobs, "run_job", forbidden)


# -- the example, end to end ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    out = tmp_path_factory.mktemp("robust") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WRAPGRAD_CACHE", str(out.parent / "cache"))
        # as after the README's set-up: the built-in plugins only
        mp.setenv("WRAPGRAD_DISABLE_PLUGIN_AUTOLOAD", "1")
        with use_registry(Registry()):
            assert main(["run", str(EXAMPLE), "--smoke", "--out", str(out), "--quiet"]) == 0
    return out, load_results(out)


@pytest.mark.slow
def test_the_example_trains_every_objective_at_two_seeds_and_reports_them(smoke) -> None:
    out, results = smoke
    assert results["smoke"] is True
    models = results["models"]
    assert list(models) == [f"{g}@{s}" for g in LABELS for s in (0, 1)]
    for label, info in models.items():
        group, seed = label.split("@")
        assert (info["group"], info["seed"]) == (group, int(seed))
        assert info["name"] == "small_cnn"
    # Nat is the recipe-trained model itself; every other objective fine-tunes it (smoke: one
    # epoch on 100 items, two batches of 50)
    assert models["Nat@0"]["history"] == []
    assert "not trained further" in models["Nat@0"]["source"]
    for g in LABELS[1:]:
        info = models[f"{g}@1"]
        assert len(info["history"]) == 1
        assert info["train_items"] == SMOKE["train_items"]
        assert info["base_seed"] == 1
    assert results["training"]["seeds"] == [0, 1]
    # every column of FAR Table 1 is scored for every model, per sample
    method = "integrated_gradients"
    keys = [m["key"] for m in results["metrics"]]
    assert keys == ["NA", "AA", "IFIA:topk_intersection", "IFIA:kendall_tau"]
    scores = results["scores"][method]
    for variant in results["enhancers"]:
        na, aa = scores[variant]["NA"], scores[variant]["AA"]
        assert len(na) == results["data"]["samples"]
        # robust implies correct: a sample counts under attack only if it is classified right
        assert all(a <= n for a, n in zip(aa, na, strict=True))
        assert all(v is None or 0.0 <= v <= 1.0 for v in scores[variant]["IFIA:topk_intersection"])
        for key in keys:  # one enhancer-free variant per model: one list per (no) seed
            assert results["scores_by_seed"][method][variant][key] == [scores[variant][key]]
    for err in results["errors"]:  # a degenerate smoke map may be n/a, never silently
        assert err["error"]
        assert err["method"] == method
    # the report: one row per objective over both seeds, FAR's numbers beside, a bar chart per
    # column, and every expected direction judged over seeds
    report = (out / "report.md").read_text(encoding="utf-8")
    assert report == render_markdown(results)
    for g in LABELS:
        assert f"| {g} | 0, 1 |" in report
    for g, na in FAR.items():
        row = next(line for line in report.splitlines() if line.startswith(f"| {g} | 0, 1 |"))
        assert f"{na:.3f}" in row
    figures = {f["path"] for f in results["figures"]}
    for key in keys:
        path = f"figures/groups_{key.replace(':', '_')}.png"
        assert path in figures
        assert (out / path).read_bytes()[:4] == b"\x89PNG"
    judged = groups.group_expectations(results)
    assert len(judged) == len(results["expectations"]) == 12
    assert "## Expectations over seeds" in report


# -- the split -----------------------------------------------------------------------------------
def test_models_train_on_the_train_part_of_their_split_and_are_scored_on_its_test_part(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from wrapgrad.catalog import load_dataset

    raw = example()
    raw["data"] = {"dataset": "digits8x8", "split": "test", "samples": 8}
    raw["train"].update(init="scratch", seeds=[0], workers=1, limit=24, epochs=1)
    raw["train"]["objectives"] = [{"label": "Nat", "objective": "natural"}]
    raw["evaluate"]["metrics"] = raw["evaluate"]["metrics"][:1]
    del raw["evaluate"]["attacks"], raw["report"]
    config = Pipeline.from_dict(raw).config
    assert config.tables["data"].split_seed == 0  # scratch models: [data].split_seed, else 0
    (job,) = TrainStep().jobs(config.tables["train"], split_seed=config.tables["data"].split_seed)
    seen: dict[str, torch.Tensor] = {}
    import wrapgrad.training as training

    real = training.train

    def spy(model: Any, data: Any, objective: str, **kwargs: Any) -> Any:
        seen["inputs"] = data[0]
        return real(model, data, objective, **kwargs)

    monkeypatch.setattr(training, "train", spy)
    result = run_job(job)
    train = load_dataset("digits8x8", split="train", seed=job.split_seed)
    test = load_dataset("digits8x8", split="test", seed=job.split_seed)
    assert torch.equal(seen["inputs"], train.inputs[:24])
    flat = {tuple(x.flatten().tolist()) for x in test.inputs}
    assert not any(tuple(x.flatten().tolist()) in flat for x in seen["inputs"])
    assert result.info["train_items"] == 24
    assert f"split seed {job.split_seed}" in result.info["accuracy_on"]


@pytest.mark.usefixtures("no_training")
def test_the_models_declare_their_split_and_the_evaluation_takes_its_test_part() -> None:
    raw = example()
    raw["train"]["recipe"] = {"data_seed": 3}
    config = Pipeline.from_dict(raw).config
    assert config.tables["data"].split_seed == 3  # the data step evaluates split seed 3
    jobs = TrainStep().jobs(config.tables["train"], split_seed=config.tables["data"].split_seed)
    assert {j.split_seed for j in jobs} == {3}
    assert all(j.recipe == {"data_seed": 3} for j in jobs)  # so is the initial model's
    # another split seed for the evaluation would put training digits among the test samples
    raw["data"]["split_seed"] = 5
    with pytest.raises(PipelineError, match=r"\[data\]\.split_seed: expected 3"):
        Pipeline.from_dict(raw)
    raw = example()
    raw["data"]["split"] = "train"
    with pytest.raises(PipelineError, match=r"\[data\]\.split: the models train on the train part"):
        Pipeline.from_dict(raw)


# -- third-party objectives ------------------------------------------------------------------------
class Margin:
    """Multi-class hinge loss (a third-party objective)."""

    def __init__(self, margin: float = 1.0) -> None:
        if margin <= 0:
            raise ValueError(f"margin: expected a number > 0, got {margin}")
        self.margin = margin
        self.metrics: dict[str, Any] = {}

    def __call__(self, model: Any, inputs: Any, target: Any, generator: Any = None) -> Any:
        loss = torch.nn.functional.multi_margin_loss(model(inputs), target, margin=self.margin)
        self.metrics = {"loss": loss.detach()}
        return loss


class _MarginPlugin:
    @staticmethod
    @hookimpl
    def wrapgrad_objectives():
        yield ObjectiveSpec(name="margin", factory=Margin, summary="hinge loss")


def _margin_file() -> dict[str, Any]:
    raw = example()
    raw["data"] = {"dataset": "digits8x8", "split": "test", "samples": 8}
    raw["train"].update(init="scratch", seeds=[0, 1], workers=1, limit=64, epochs=2)
    raw["train"]["objectives"] = [
        {"label": "Hinge", "objective": "margin", "options": {"margin": 0.5}, "lr": 3e-3}
    ]
    del raw["report"]["reference"], raw["report"]["expect"]
    return raw


def test_a_third_party_objective_is_used_by_name_in_the_file(registry) -> None:
    registry.register(_MarginPlugin(), name="margin-plugin")
    config = Pipeline.from_dict(_margin_file()).config
    table = config.tables["train"]
    jobs = TrainStep().jobs(table, split_seed=0)
    assert [j.label for j in jobs] == ["Hinge@0", "Hinge@1"]
    assert jobs[0].options == {"margin": 0.5}
    assert jobs[0].loop["lr"] == 3e-3
    result = run_job(jobs[0])
    history = result.info["history"]
    assert result.info["objective"] == "margin"
    assert len(history) == 2
    assert history[1]["metrics"]["loss"] < history[0]["metrics"]["loss"]
    # its options are checked like a built-in's, with suggestions
    raw = _margin_file()
    raw["train"]["objectives"][0]["options"] = {"margn": 0.5}
    with pytest.raises(PipelineNameError, match=r"objectives\[0\]\.options\.margn.*'margin'"):
        Pipeline.from_dict(raw)
    raw["train"]["objectives"][0]["options"] = {"margin": -1.0}
    with pytest.raises(PipelineError, match=r"objectives\[0\]\.options: margin: expected"):
        Pipeline.from_dict(raw)


# -- bad entries ----------------------------------------------------------------------------------
@pytest.mark.usefixtures("no_training")
@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ("objectives", 1, "objective"),
            "pgdd",
            r"objectives\[1\]\.objective: unknown objective 'pgdd'; did you mean 'pgd'",
        ),
        (
            ("objectives", 1, "options"),
            {"epsilonn": 0.1},
            r"objectives\[1\]\.options\.epsilonn: unknown option.*'epsilon'",
        ),
        (
            ("objectives", 1, "options"),
            {"epsilon": -0.1},
            r"objectives\[1\]\.options: epsilon: expected a number > 0",
        ),
        (
            ("objectives", 1, "options"),
            {"lr": 0.1},
            r"objectives\[1\]\.options\.lr: 'lr' is a loop setting",
        ),
        (("objectives", 2, "label"), "Adv", r"\[train\]\.objectives: expected distinct labels"),
        (("objectives", 0, "label"), "a@b", r"objectives\[0\]\.label: expected a label without"),
        (("objectives", 0, "epochs"), -1, r"objectives\[0\]\.epochs: expected an integer >= 0"),
        (("objectives", 0, "bogus"), 1, r"objectives\[0\]\.bogus: unknown field"),
        (("objectives",), [], r"\[train\]\.objectives: expected at least one objective"),
        (("seeds",), [], r"\[train\]\.seeds: expected at least one training seed"),
        (("seeds",), [1, 1], r"\[train\]\.seeds: expected distinct seeds"),
        (("optimizer",), "adamx", r"\[train\]\.optimizer: expected one of 'adam'"),
        (("init",), "warm", r"\[train\]\.init: expected one of 'pretrained', 'scratch'"),
        (("recipe",), {"epochz": 1}, r"\[train\]\.recipe"),
        (("model",), "small_cnnn", r"\[train\]\.model: unknown model 'small_cnnn'"),
        (("workers",), 0, r"\[train\]\.workers: expected an integer >= 1"),
    ],
)
def test_a_bad_entry_is_refused_naming_its_field(path: tuple, value: Any, message: str) -> None:
    raw = example()
    table = raw["train"]
    for key in path[:-1]:
        table = table[key]
    table[path[-1]] = value
    with pytest.raises(PipelineError, match=message):
        Pipeline.from_dict(raw)


@pytest.mark.usefixtures("no_training")
def test_scratch_models_cannot_skip_training() -> None:
    raw = example()
    raw["train"]["init"] = "scratch"
    with pytest.raises(PipelineError, match=r"objectives\[0\]\.epochs: expected at least 1"):
        Pipeline.from_dict(raw)


# -- settings and smoke -----------------------------------------------------------------------------
@pytest.mark.usefixtures("no_training")
def test_settings_come_from_the_preset_then_the_table_then_the_entry() -> None:
    from wrapgrad_robust.presets import preset

    raw = example()
    raw["train"]["lr"] = 3e-4
    raw["train"]["objectives"][4]["options"] = {"lam": 0.25}
    config = Pipeline.from_dict(raw).config
    jobs = {j.label: j for j in TrainStep().jobs(config.tables["train"], split_seed=0)}
    aat = jobs["AAT@1"]
    assert aat.loop["lr"] == 3e-4  # the table's over the preset's
    assert aat.loop["batch_size"] == preset("aat")["batch_size"]
    assert aat.options["lam"] == 0.25
    assert aat.options["epsilon"] == preset("aat")["epsilon"]
    assert aat.limit == 2000
    assert jobs["AdvAAT@0"].limit is None
    assert jobs["AdvAAT@0"].loop["epochs"] == 1
    assert jobs["Nat@0"].loop["epochs"] == 0
    assert {j.seed for j in jobs.values()} == {0, 1}
    assert all(j.base_seed == j.seed for j in jobs.values())


@pytest.mark.usefixtures("no_training")
def test_smoke_keeps_two_seeds_and_caps_every_training() -> None:
    raw = example()
    raw["train"]["seeds"] = [0, 1, 2]
    config = shrink(Pipeline.from_dict(raw).config)
    table = config.tables["train"]
    assert table.seeds == (0, 1)
    assert table.workers == 1
    assert table.recipe == SMOKE["recipe"]
    for job in TrainStep().jobs(table, split_seed=0):
        assert job.loop["epochs"] <= SMOKE["epochs"]
        assert job.limit <= SMOKE["train_items"]
        if job.objective in ("aat", "adv_aat", "pgd"):
            assert job.options["steps"] <= 3
    metric = next(m for m in config.tables["evaluate"].metrics if m.label == "AA")
    assert metric.params["steps"] <= 2


# -- the report over training seeds -------------------------------------------------------------------
def _results(nat: list[list[float]], aat: list[list[float]]) -> dict[str, Any]:
    """A hand-built results dict: groups Nat and AAT, one model per seed."""
    models, scores, variants = {}, {}, {}
    for group, rows in (("Nat", nat), ("AAT", aat)):
        for seed, row in enumerate(rows):
            label = f"{group}@{seed}"
            models[label] = {"group": group, "seed": seed}
            variants[f"{label}/Baseline"] = {"model": label, "enhancer": "Baseline"}
            scores[f"{label}/Baseline"] = {"IN": row}
    metric = {"key": "IN", "label": "IN", "higher_is_better": True}
    return {
        "methods": ["ig"],
        "enhancers": list(variants),
        "variants": variants,
        "models": models,
        "metrics": [metric],
        "scores": {"ig": scores},
        "expectations": [{"metric": "IN", "order": ["Nat", "AAT"], "alpha": 0.05}],
        "reference": {"AAT": {"IN": 0.76}},
    }


def test_groups_pool_seeds_and_samples() -> None:
    rng = np.random.default_rng(0)
    nat = rng.uniform(0.2, 0.4, size=(2, 30))
    results = _results(nat.tolist(), (nat + 0.2).tolist())
    found = groups.model_groups(results)
    assert found == {
        "Nat": [(0, "Nat@0/Baseline"), (1, "Nat@1/Baseline")],
        "AAT": [(0, "AAT@0/Baseline"), (1, "AAT@1/Baseline")],
    }
    mean, lo, hi, n, seeds = groups.group_stats(nat.tolist())
    assert mean == pytest.approx(nat.mean())
    assert lo < mean < hi
    assert (n, seeds) == (30, 2)
    # a uniform shift of every score: held, significant, the same difference at each seed
    (row,) = groups.group_expectations(results)
    (step,) = row["steps"]
    assert row["held"]
    assert row["significant"]
    assert step["seed_differences"] == pytest.approx([0.2, 0.2])
    lines = "\n".join(groups.table_lines(results))
    assert "| AAT | 0, 1 |" in lines
    assert "0.760" in lines


def test_a_difference_that_flips_sign_across_seeds_is_not_significant() -> None:
    rng = np.random.default_rng(1)
    nat = rng.uniform(0.2, 0.4, size=(2, 40))
    aat = nat.copy()
    aat[0] += 0.3  # seed 0 improves a lot, seed 1 gets worse: the mean still improves
    aat[1] -= 0.1
    (row,) = groups.group_expectations(_results(nat.tolist(), aat.tolist()))
    (step,) = row["steps"]
    assert row["held"]
    assert not row["significant"]
    assert not step["consistent"]
    assert step["p"] < 0.05
    text = "\n".join(groups.expectation_lines(_results(nat.tolist(), aat.tolist())))
    assert "sign differs across seeds" in text
    assert "not every step significant" in text


# -- the accuracy metrics ------------------------------------------------------------------------------
def _linear() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()


def test_natural_accuracy_is_per_sample_correctness() -> None:
    model = _linear()
    x = torch.rand(10, 1, 2, 2)
    pred = model(x).argmax(dim=1)
    target = pred.clone()
    target[::3] = (target[::3] + 1) % 3
    got = NaturalAccuracy()(model, x, target)
    assert got.tolist() == [0.0 if i % 3 == 0 else 1.0 for i in range(10)]


def test_pgd_accuracy_never_exceeds_natural_accuracy_and_leaves_the_model_alone() -> None:
    model = _linear()
    x = torch.rand(16, 1, 2, 2)
    y = model(x).argmax(dim=1)
    y[:4] = (y[:4] + 1) % 3
    before = copy.deepcopy(model.state_dict())
    tiny = PGDAccuracy(1e-6, steps=3, bounds=(0.0, 1.0))(model, x, y)
    strong = PGDAccuracy(2.0, steps=20, step_size=0.2, restarts=2, bounds=(0.0, 1.0))(model, x, y)
    natural = NaturalAccuracy()(model, x, y)
    assert torch.all(strong <= tiny)
    assert torch.all(tiny <= natural)
    assert natural[:4].sum() == 0
    assert tiny.sum() >= 10
    assert strong.sum() < natural.sum()  # the whole data range moves a linear model's class
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    # seeded: the same random starts
    again = PGDAccuracy(2.0, steps=20, step_size=0.2, restarts=2, bounds=(0.0, 1.0))(model, x, y)
    assert torch.equal(strong, again)
    with pytest.raises(ValueError, match="epsilon"):
        PGDAccuracy(0.0)


def test_pgd_accuracy_is_registered_with_its_smoke_caps() -> None:
    from wrapgrad.registry import get_registry

    spec = get_registry().get("metric", "pgd_accuracy")
    assert dict(spec.smoke)["steps"] <= 2
    assert spec.higher_is_better
    assert spec.requires == "model"
