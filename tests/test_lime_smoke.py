"""Lime under ``--smoke`` gives maps, not zeros: its smoke settings set a least-squares surrogate.

Captum's default surrogate, ``SkLearnLasso(alpha=0.01)``, zeroes a feature's coefficient unless
removing the feature moves the output by more than about ``4 * alpha``; a near-chance model (a
smoke run's one-epoch model, an untrained one, the conformance kit's probe) moves it less, so
every smoke Lime map was zero whatever ``n_samples`` was, and every Quantus metric refused them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import wrapgrad
from wrapgrad.errors import WrapgradValueError
from wrapgrad.options import capped
from wrapgrad.registry import get_registry
from wrapgrad.testing.probes import make_probe

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    # Captum's advice to explain one example at a time (Lime on a batch).
    pytest.mark.filterwarnings("ignore:You are providing multiple inputs:UserWarning"),
]


def _nonzero_maps(out: torch.Tensor) -> int:
    return int((out.flatten(1) != 0).any(dim=1).sum())


def test_smoke_capped_lime_explains_the_probe_with_nonzero_maps() -> None:
    caps = get_registry().get("explainer", "lime").smoke_caps()
    assert caps["n_samples"] <= 4  # still cheap: 4 forward passes per sample
    probe = make_probe()
    n = probe.inputs.shape[0]
    for feature_mask in ({"feature_mask": probe.feature_mask}, {}):
        explain = wrapgrad.wrap(probe.model, "lime", **capped(feature_mask, caps))
        for seed in range(8):  # Lime draws from torch's global RNG
            torch.manual_seed(seed)
            out = explain(probe.inputs, target=probe.target)
            assert _nonzero_maps(out) == n, (feature_mask.keys(), seed)
    # Captum's Lasso at the same sample count (and at many more) zeroes these maps.
    torch.manual_seed(0)
    lasso = wrapgrad.wrap(probe.model, "lime", n_samples=50, feature_mask=probe.feature_mask)
    assert _nonzero_maps(lasso(probe.inputs, target=probe.target)) < n


def test_a_surrogate_the_pipeline_sets_is_kept_and_names_are_checked() -> None:
    caps = get_registry().get("explainer", "lime").smoke_caps()
    mine = {"interpretable_model": "linear_model.Ridge", "n_samples": 50}
    assert capped(mine, caps) == {**mine, "n_samples": caps["n_samples"]}
    probe = make_probe()
    out = wrapgrad.wrap(probe.model, "lime", **capped(mine, caps))(probe.inputs[:1], target=0)
    assert _nonzero_maps(out) == 1
    for bad in ("linear_model.Lass", "LinearRegression", "no_such_module.Lasso"):
        with pytest.raises(WrapgradValueError, match="interpretable_model"):
            wrapgrad.wrap(probe.model, "lime", interpretable_model=bad)


PIPELINE = """
[pipeline]
name = "lime_smoke"
seed = 0

[data]
dataset = "digits8x8"
samples = 6

[model]
name = "small_cnn"
weights = "w.pt"

[explain]
methods = ["lime"]

[[evaluate.metrics]]
label = "mprt"
quantus = "ModelParameterRandomisation"

[report]
make_figures = false
"""


def test_a_smoke_run_of_lime_scores_its_maps_and_prints_no_quantus_notice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``wrapgrad run --smoke`` on an untrained model: Lime's maps are scored (Quantus refused
    the all-zero maps: an error cell), and Quantus' rename notice of ModelParameterRandomisation
    is not printed."""
    import json

    from wrapgrad_data.models import small_cnn

    from wrapgrad.cli import main

    monkeypatch.setenv("WRAPGRAD_CACHE", str(tmp_path / "cache"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.save(small_cnn(1, 10).state_dict(), tmp_path / "w.pt")
    (tmp_path / "p.toml").write_text(PIPELINE, encoding="utf-8")
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "p.toml"), "--smoke", "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "renamed to MPRT" not in captured.out + captured.err
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["errors"] == []
    scores = results["scores"]["lime"]["Baseline"]["mprt"]
    assert len(scores) == 6
    assert all(s is not None for s in scores)
    assert results["method_options"]["lime"]["interpretable_model"] == (
        "linear_model.LinearRegression"
    )


def test_the_estimator_path_works_with_lime_given_as_its_class() -> None:
    """The path form is the core's (CaptumExplainer.from_options), not only the registered
    name's: ``wrap(model, captum.attr.Lime, interpretable_model="...")`` builds the surrogate,
    and a bad path is refused naming interpretable_model."""
    import captum.attr as ca
    import numpy as np
    from torch import nn

    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    by_class = wrapgrad.wrap(model, ca.Lime, interpretable_model="linear_model.LinearRegression")
    by_name = wrapgrad.wrap(model, "lime", interpretable_model="linear_model.LinearRegression")
    torch.manual_seed(0)
    np.random.seed(0)
    a = by_class(x, target=0, n_samples=8)
    torch.manual_seed(0)
    np.random.seed(0)
    torch.testing.assert_close(a, by_name(x, target=0, n_samples=8), rtol=0, atol=0)
    assert a.abs().sum() > 0
    with pytest.raises(WrapgradValueError, match="interpretable_model"):
        wrapgrad.wrap(model, ca.Lime, interpretable_model="linear_model.Nope")
