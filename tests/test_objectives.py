"""The FAR objective family (plugins/wrapgrad_robust): natural, pgd, ig_norm, ig_sum_norm, aat,
adv_aat, registered through the objective hook."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from wrapgrad_robust.dissimilarity import dissimilarity, topk_dissimilarity
from wrapgrad_robust.objectives import FarObjective, adv_aat, pgd

import wrapgrad
from wrapgrad.differentiable import integrated_gradients
from wrapgrad.errors import UnknownNameError, WrapgradValueError
from wrapgrad.registry import get_registry

from ._problems import bright_band
from ._trained import state_of, unchanged

#: Small options that keep each objective's inner maximisation cheap.
TINY = {
    "natural": {},
    "pgd": {"epsilon": 0.1, "steps": 3, "step_size": 0.05},
    "ig_norm": {"epsilon": 0.1, "steps": 2, "step_size": 0.05, "ig_steps": 3},
    "ig_sum_norm": {"epsilon": 0.1, "steps": 2, "step_size": 0.05, "ig_steps": 3},
    "aat": {"epsilon": 0.1, "steps": 2, "ig_steps": 3, "k": 8},
    "adv_aat": {"epsilon": 0.1, "steps": 2, "ig_steps": 3, "k": 8},
}


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    )


@pytest.fixture(scope="module")
def problem() -> tuple[torch.Tensor, torch.Tensor]:
    """48 8x8 images in [0, 1]; the class is which third of the image (columns) is brightest."""
    return bright_band(48, dim=3)


def _build(name: str, **options):
    return get_registry().get("objective", name).factory(**{**TINY[name], **options})


def test_the_six_objectives_are_registered_with_their_options() -> None:
    names = set(get_registry().names("objective"))
    assert {"natural", "pgd", "ig_norm", "ig_sum_norm", "aat", "adv_aat"} <= names
    options = {n: get_registry().get("objective", n).option_names()[0] for n in TINY}
    assert {"epsilon", "step_size", "steps", "random_start", "bounds"} <= options["pgd"]
    assert {"lam", "ig_steps", "bounds", "epsilon"} <= options["ig_norm"]
    assert {"beta", "ig_steps", "bounds"} <= options["ig_sum_norm"]
    for n in ("aat", "adv_aat"):
        assert {"lam", "epsilon", "steps", "step_size", "k", "ig_steps", "bounds"} <= options[n]
    # seed defaults: MNIST epsilon 0.3, FAR lambda 0.5, RAR lambda 1 and beta 0.1
    cfg = {n: get_registry().get("objective", n).factory().config for n in TINY}
    assert cfg["pgd"].epsilon == cfg["aat"].epsilon == cfg["adv_aat"].epsilon == 0.3
    assert cfg["aat"].lam == cfg["adv_aat"].lam == 0.5
    assert cfg["ig_norm"].lam == 1.0
    assert cfg["ig_sum_norm"].lam == 0.1
    assert cfg["aat"].step_size == pytest.approx(1.2 * 0.3 / 7)  # FAR Table 2


@pytest.mark.parametrize("name", list(TINY))
def test_each_objective_lowers_its_own_loss(name, problem) -> None:
    x, y = problem
    model = tiny_cnn()
    objective = _build(name)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)

    def loss_now() -> float:
        return float(objective(model, x, y, generator=torch.Generator().manual_seed(5)).detach())

    before = loss_now()
    for step in range(12):
        b = slice(16 * (step % 3), 16 * (step % 3 + 1))
        loss = objective(model, x[b], y[b], generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = loss_now()
    assert after < 0.8 * before, (name, before, after)
    parts = objective.metrics
    assert "loss" in parts
    assert "accuracy" in parts
    if name != "natural" and name != "pgd":
        total = (
            parts["ce" if "ce" in parts else "ce_adv"] + objective.config.lam * parts["attribution"]
        )
        torch.testing.assert_close(parts["loss"], total)


@pytest.mark.parametrize("random_start", [False, True])
def test_adv_aat_with_lambda_zero_is_pgd(problem, random_start) -> None:
    """FAR Sec. 3.1: Madry's objective is Eq. 6 with lambda = 0."""
    x, y = problem
    model = tiny_cnn()
    settings = {"epsilon": 0.2, "steps": 4, "step_size": 0.03, "random_start": random_start}
    a = pgd(**settings)
    b = adv_aat(lam=0.0, ig_steps=3, **settings)
    loss_a = a(model, x, y, generator=torch.Generator().manual_seed(3))
    loss_b = b(model, x, y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(loss_a, loss_b)
    assert torch.equal(a.metrics["ce_adv"], b.metrics["ce_adv"])
    assert float(b.metrics["attribution"]) > 0  # the term is there, weighted by 0
    ga = torch.autograd.grad(loss_a, list(model.parameters()))
    gb = torch.autograd.grad(loss_b, list(model.parameters()))
    assert all(torch.equal(u, v) for u, v in zip(ga, gb, strict=True))
    # and the adversarial loss is above the clean one (the ascent worked)
    with torch.no_grad():
        assert float(loss_a.detach()) > float(F.cross_entropy(model(x), y))


def _capture_inner(objective: FarObjective) -> dict[str, torch.Tensor]:
    """Record the x~ each call's inner maximisation returns."""
    found: dict[str, torch.Tensor] = {}
    original = objective._inner

    def spy(*args):
        found["x_t"] = original(*args)
        return found["x_t"]

    objective._inner = spy  # type: ignore[method-assign]
    return found


def test_inner_maximisations_raise_their_objective_and_keep_labels(problem) -> None:
    x, y = problem
    model = tiny_cnn()
    rar = _build("ig_norm", steps=4)
    found = _capture_inner(rar)
    rar(model, x, y, generator=torch.Generator().manual_seed(0))

    def ig_l1(z):  # ||IG(x, z)||_1 of the loss: RAR's size function
        def per_sample_loss(points, labels):
            return F.cross_entropy(model(points), labels, reduction="none")

        maps = integrated_gradients(
            per_sample_loss, z, None, baselines=x, n_steps=3, method="riemann_right",
            additional_forward_args=(y,),
        )  # fmt: skip
        return maps.abs().flatten(1).sum(1).detach()

    nearby = (x + 0.1 * torch.rand(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert float(ig_l1(found["x_t"]).mean()) > float(ig_l1(nearby).mean())
    # AAT's IFIA keeps every sample's predicted label (FAR Eq. 4) and moves
    aat = _build("aat", steps=5, epsilon=0.4)
    found = _capture_inner(aat)
    aat(model, x, y, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(found["x_t"]).argmax(1), model(x).argmax(1))
    assert float((found["x_t"] - x).abs().max()) > 0


def test_objectives_change_no_parameter_or_buffer(problem) -> None:
    x, y = problem
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(256, 3)
    ).eval()
    before = state_of(model)
    for name in TINY:
        loss = _build(name)(model, x[:8], y[:8], generator=torch.Generator().manual_seed(0))
        assert loss.requires_grad
    assert unchanged(model, before)
    assert all(p.grad is None for p in model.parameters())
    # in training mode only the loss's own forward pass touches BatchNorm's statistics
    model.train()
    _build("aat")(model, x[:8], y[:8], generator=torch.Generator().manual_seed(0))
    assert int(model[1].num_batches_tracked) == 1


def test_dissimilarities_by_hand() -> None:
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert float(dissimilarity("l1", a, torch.zeros_like(a))) == 10.0
    assert float(dissimilarity("pcl", a, 2 * a + 1)) == pytest.approx(0.0, abs=1e-7)  # PCC 1
    assert float(dissimilarity("pcl", a, -a)) == pytest.approx(1.0)  # PCC -1
    assert float(dissimilarity("cosine", a, 3 * a)) == pytest.approx(0.0, abs=1e-7)
    # top-k: mass of I(a) outside the top-2 features of b
    b = torch.tensor([[0.0, 0.0, 1.0, 5.0]])
    assert float(topk_dissimilarity(a, b, 2)) == pytest.approx(1 - 7 / 10)


def test_bad_options_name_the_argument() -> None:
    reg = get_registry()
    with pytest.raises(WrapgradValueError, match=r"^epsilon"):
        reg.get("objective", "pgd").factory(epsilon=0.0)
    with pytest.raises(WrapgradValueError, match=r"^epsilon"):
        reg.get("objective", "adv_aat").factory(epsilon=-0.1)
    with pytest.raises(WrapgradValueError, match=r"^ig_steps"):
        reg.get("objective", "aat").factory(ig_steps=0)
    with pytest.raises(WrapgradValueError, match=r"^random_start: .*stationary"):
        reg.get("objective", "aat").factory(k=None)
    with pytest.raises(WrapgradValueError, match=r"^k"):
        reg.get("objective", "aat").factory(k=0)
    with pytest.raises(WrapgradValueError, match=r"^dissimilarity"):
        reg.get("objective", "aat").factory(dissimilarity="kl")
    with pytest.raises(UnknownNameError, match="adv_aat"):
        reg.get("objective", "adv_att")
    obj = reg.get("objective", "pgd").factory(steps=1)
    with pytest.raises(WrapgradValueError, match=r"^bounds"):
        obj(tiny_cnn(), torch.full((2, 1, 8, 8), 2.0), torch.tensor([0, 1]))


def test_train_cli_writes_checkpoint_and_summary(tmp_path, capsys) -> None:
    import json

    from wrapgrad.cli import main
    from wrapgrad.training import load_checkpoint

    out = tmp_path / "run"
    argv = [
        "train", "--model", "small_cnn", "--dataset", "digits8x8", "--objective", "pgd",
        "--epochs", "1", "--limit", "64", "--eval-samples", "50", "--batch-size", "32",
        "--option", "steps=1", "--option", "epsilon=0.1", "--init", "scratch",
        "--out", str(out), "-q",
    ]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objective"] == "pgd"
    assert summary["settings"]["steps"] == 1
    assert len(summary["result"]["history"]) == 1
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    assert "test accuracy" in capsys.readouterr().out
    # resuming a finished run with the same settings trains nothing more
    assert main([*argv, "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["result"]["resumed_from"] == 1
    assert main([*argv[:-3], "--option", "lamb=1", "--out", str(out), "-q"]) == 2
    assert "lamb" in capsys.readouterr().err


def test_wrapgrad_train_runs_a_registered_objective_by_name(problem) -> None:
    x, y = problem
    result = wrapgrad.train(
        tiny_cnn(), (x, y), "adv_aat", epochs=1, batch_size=16, **TINY["adv_aat"]
    )
    assert set(result.history[0].metrics) >= {"loss", "ce_adv", "attribution", "accuracy"}
