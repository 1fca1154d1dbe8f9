"""The neural-SDE comparison on top of train_sde: the ``sde`` and ``sde_compare`` pipeline steps
(examples/neural_sde_cmnist.toml end to end in --smoke mode), the ``wrapgrad sde`` command, the
recipes (three kinds from one initialisation, the cache), presets and the statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wrapgrad.errors import UnknownNameError
from wrapgrad.guard import ModelSnapshot
from wrapgrad.registry import Registry, use_registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "neural_sde_cmnist.toml"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("WRAPGRAD_CACHE", str(folder))
    return folder


# -- the example, end to end ------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from wrapgrad_pipeline.runner import Pipeline

    root = tmp_path_factory.mktemp("sde_smoke")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WRAPGRAD_CACHE", str(root / "cache"))
        # after the README's set-up alone: the built-in plugins, none of the test-only ones
        mp.setenv("WRAPGRAD_DISABLE_PLUGIN_AUTOLOAD", "1")
        with use_registry(Registry()):
            run = Pipeline.from_file(EXAMPLE).run(root / "out", smoke=True, progress=False)
    return root, run


def test_example_smoke_runs_end_to_end_with_the_three_models_and_the_paper_beside(smoke_run):
    _, run = smoke_run
    res = run.results
    models = res["sde"]["models"]
    assert sorted(models) == ["Brownian@0", "ResNet@0", "Shaped@0"]  # smoke: the first seed
    assert models["ResNet@0"]["sigma"] == 0.0
    assert models["Shaped@0"]["sigma"] == 0.5
    # the same budget for all three; only the shaped SDE refreshes maps (all 256 items, after
    # every round but the last)
    assert {m["epochs"] for m in models.values()} == {2}
    assert [r["refreshed"] for r in models["Shaped@0"]["round_log"]] == [256, 0]
    assert [r["refreshed"] for r in models["Brownian@0"]["round_log"]] == [0, 0]
    for m in models.values():
        assert 0.0 <= m["test_accuracy"] <= 1.0
    rows = {(r["method"], r["enhancer"], r["label"]): r for r in res["sde_comparison"]["rows"]}
    ig = rows["integrated_gradients", "Baseline", "sensitivity"]
    assert ig["paper"] == {"ResNet": 0.576, "Brownian": 0.450, "Shaped": 0.420}
    assert rows["integrated_gradients", "Baseline", "sic"]["paper"]["Shaped"] == 0.683
    for method in ("integrated_gradients", "saliency", "deep_lift"):
        for enhancer in ("Baseline", "SG"):
            r = rows[method, enhancer, "sensitivity"]
            assert set(r["kinds"]) == {"ResNet", "Brownian", "Shaped"}
            for stats in r["kinds"].values():  # the mean lies in its interval
                assert stats["low"] <= stats["mean"] <= stats["high"]
            assert [(s["worse"], s["better"]) for s in r["steps"]] == [
                ("ResNet", "Brownian"),
                ("Brownian", "Shaped"),
            ]
    assert any(k[2].startswith("localisation") for k in rows)
    sat = res["sde_comparison"]["saturation"]["kinds"]
    assert set(sat) == {"ResNet", "Brownian", "Shaped"}
    report = run.report_path.read_text(encoding="utf-8")
    assert "The paper's comparison (Jha et al. 2022)" in report
    assert "| IG | sensitivity ↓ |" in report
    assert "0.576 / 0.450 / 0.420" in report
    assert (run.out_dir / "figures" / "ig_saturation.png").stat().st_size > 0


def test_the_pipeline_checks_sde_tables():
    from wrapgrad_pipeline.runner import Pipeline
    from wrapgrad_pipeline.schema import PipelineError

    base = {
        "pipeline": {"name": "t"},
        "data": {"dataset": "cmnist", "samples": 4},
        "sde": {"seeds": [0]},
        "explain": {"methods": ["saliency"]},
        "evaluate": {"metrics": [{"name": "sic"}]},
    }
    Pipeline.from_dict(base)  # valid
    with pytest.raises(PipelineError, match=r"\[sde\]\.train\.lrr"):
        Pipeline.from_dict({**base, "sde": {"train": {"lrr": 1e-3}}})
    with pytest.raises(PipelineError, match=r"\[sde\]\.sde\.outlier"):
        Pipeline.from_dict({**base, "sde": {"sde": {"outlier": 0.9}}})
    with pytest.raises(PipelineError, match="seeds"):
        Pipeline.from_dict({**base, "sde": {"seeds": [1, 1]}})
    raw = {k: v for k, v in base.items() if k != "sde"}
    with pytest.raises(PipelineError, match=r"\[sde_compare\]"):
        Pipeline.from_dict({**raw, "model": {"name": "small_resnet"}, "sde_compare": {}})
    with pytest.raises(PipelineError, match=r"order"):
        Pipeline.from_dict(
            {
                **base,
                "sde": {"kinds": ["resnet", "shaped"]},
                "sde_compare": {"order": ["resnet", "brownian"]},
            }
        )


# -- recipes ----------------------------------------------------------------------------------
def _data(n: int = 32):
    from wrapgrad.catalog import load_dataset

    d = load_dataset("cmnist", split="train", limit=n)
    return d.inputs, d.labels


def test_the_resnet_kind_is_the_plain_network_bit_for_bit_and_the_user_model_is_untouched():
    from wrapgrad_sde.recipes import build_model, convert

    x, _ = _data(8)
    init = build_model("small_resnet", 3, 10, seed=4)
    before = ModelSnapshot(init)
    again = build_model("small_resnet", 3, 10, seed=4)
    assert all(
        torch.equal(a, b)
        for a, b in zip(init.state_dict().values(), again.state_dict().values(), strict=False)
    )
    g = torch.random.get_rng_state()
    resnet = convert(init, "resnet", 0.5, 0, {}).train()
    assert resnet.sigma == 0.0
    assert torch.equal(resnet(x), again.train()(x))  # sigma 0: the plain network, in training too
    shaped = convert(init, "shaped", 0.5, 0, {"guide_method": "saliency"})
    brownian = convert(
        init, "brownian", 0.5, 0, {"guide_method": "saliency"}
    )  # dropped: no shaping
    assert shaped.needs_guide
    assert not brownian.needs_guide
    assert brownian.sigma == 0.5
    assert torch.equal(torch.random.get_rng_state(), g)
    assert before.differences() == []


def test_train_kind_caches_the_trained_model_and_a_second_call_loads_it(cache):
    from wrapgrad_sde.recipes import build_model, train_kind

    data = _data(32)
    init = build_model("small_resnet", 3, 10, seed=0)
    before = ModelSnapshot(init)
    kwargs = {
        "seed": 0,
        "sigma": 0.5,
        "sde_options": {},
        "train_options": {
            "rounds": 2,
            "epochs_per_round": 1,
            "patience": None,
            "batch_size": 16,
            "lr": 1e-3,
        },
        "description": {"test": "cache"},
    }
    first = train_kind("shaped", init, data, **kwargs)
    assert not first.cached
    assert len(first.result.rounds) == 2
    second = train_kind("shaped", init, data, **kwargs)
    assert second.cached
    assert len(second.result.train.history) == 2
    for a, b in zip(
        first.sde.state_dict().values(), second.sde.state_dict().values(), strict=False
    ):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)
    other = train_kind("shaped", init, data, **{**kwargs, "seed": 1})
    assert not other.cached  # the seed is part of the key
    assert before.differences() == []
    assert len(list((cache / "sde").iterdir())) == 2


# -- the command ------------------------------------------------------------------------------
def test_sde_command_trains_in_rounds_and_writes_a_loadable_plain_model(tmp_path, capsys):
    from wrapgrad.cli import main
    from wrapgrad.registry import get_registry

    out = tmp_path / "run"
    args = ["sde", "--kind", "shaped", "--out", str(out), "--limit", "32", "--rounds", "2"]
    args += ["--epochs-per-round", "1", "--batch-size", "16", "--eval-samples", "16", "-q"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "shaped"
    assert summary["sigma"] == 0.5
    assert [r["refreshed"] for r in summary["result"]["rounds"]] == [32, 0]
    assert summary["settings"]["lr"] == 1e-3  # the embedded preset, overridden where given
    assert summary["result"]["rounds_config"]["rounds"] == 2
    net = get_registry().get("model", "small_resnet").factory(in_channels=3, num_classes=10)
    net.load_state_dict(torch.load(out / "model.pt"))
    assert "round 2 (epoch 2)" in capsys.readouterr().out
    assert (out / "checkpoint.pt").exists()


# -- presets and statistics -------------------------------------------------------------------
def test_presets_are_copies_and_the_paper_preset_is_the_papers():
    from wrapgrad_sde.presets import PRESETS, preset

    p = preset("paper")
    assert (p["optimizer"], p["lr"], p["scheduler"]) == ("adam", 1e-4, "plateau")
    e = preset("embedded")
    e["scheduler_options"]["factor"] = 0.9
    assert PRESETS["embedded"]["scheduler_options"]["factor"] == 0.5
    with pytest.raises(UnknownNameError, match="scale"):
        preset("papr")


def test_mean_interval_over_seeds_and_samples():
    from wrapgrad_sde.stats import mean_interval

    rows = [[1.0, 2.0, 3.0, None], [3.0, 4.0, 5.0, 7.0]]  # the last sample dropped (None at seed 0)
    s = mean_interval(rows)
    assert s["mean"] == pytest.approx(3.0)
    assert s["n"] == 3
    assert s["seeds"] == 2
    assert s["per_seed"] == [2.0, 4.0]
    assert s["low"] < 3.0 < s["high"]
    flat = mean_interval([[2.0] * 5, [2.0] * 5])
    assert flat["low"] == flat["high"] == 2.0


def test_compare_kinds_significance_needs_every_seed_and_both_tests():
    from wrapgrad_sde.stats import compare_kinds

    rng = np.random.default_rng(0)
    worse = rng.normal(1.0, 0.1, size=(2, 40))
    better = worse - 0.3 + rng.normal(0, 0.05, size=(2, 40))  # lower is better
    t = compare_kinds(worse.tolist(), better.tolist(), higher_is_better=False)
    assert t["significant"]
    assert not t["reversed_significant"]
    assert t["improvement"] == pytest.approx(float((worse - better).mean()))
    assert t["p_bootstrap"] < 0.05
    assert t["p_wilcoxon"] < 0.05
    r = compare_kinds(better.tolist(), worse.tolist(), higher_is_better=False)
    assert r["reversed_significant"]
    assert not r["significant"]
    # one seed disagrees: not significant even though the pooled mean improves
    mixed = better.copy()
    mixed[1] = worse[1] + 0.05
    m = compare_kinds(worse.tolist(), mixed.tolist(), higher_is_better=False)
    assert m["per_seed"][0] > 0 > m["per_seed"][1]
    assert not m["significant"]
    with pytest.raises(ValueError, match="better"):
        compare_kinds([[1.0, 2.0]], [[1.0]], True)


def test_saturation_panels_scale_the_logit_and_the_gradient():
    from types import SimpleNamespace

    from wrapgrad_sde.figures import saturation_panels

    alphas = torch.tensor([0.25, 0.5, 0.75])
    curve = SimpleNamespace(
        alphas=alphas,
        logits=torch.tensor([[1.0, 3.0, 5.0]]),
        grad_norms=torch.tensor([[2.0, 1.0, 0.0]]),
        alignment=torch.tensor([[1.0, 0.5, 0.0]]),
    )
    p = saturation_panels([curve, curve])
    assert np.allclose(p["logit"], [[0.0, 0.5, 1.0]] * 2)
    assert np.allclose(p["gradient"], [[2.0, 1.0, 0.0]] * 2)  # mean norm is 1
    assert np.allclose(p["alpha"], alphas.numpy())
