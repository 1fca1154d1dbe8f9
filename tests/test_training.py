"""The one training loop (wrapgrad.train): results, reproducibility, checkpoints, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import wrapgrad
from wrapgrad.errors import UnknownNameError, WrapgradTypeError, WrapgradValueError
from wrapgrad.training import EpochRecord, TrainResult, load_checkpoint

from ._problems import bright_band


def tiny(seed: int = 0, width: int = 6) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Dropout(0.2),  # draws from the global RNG: the loop must seed and checkpoint it
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, width),
        nn.ReLU(),
        nn.Linear(width, 3),
    )


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    """40 8x8 images in [0, 1]; the class is which third of the image (rows) is brightest."""
    return bright_band(40, dim=2)


PGD = {"objective": "pgd", "epsilon": 0.1, "steps": 2, "step_size": 0.05}
RUN = {"batch_size": 8, "lr": 0.01, "seed": 3}


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_trains_in_place_returns_history_and_leaves_global_rng_alone(data) -> None:
    model = tiny().eval()
    start = weights(model)
    rng = torch.get_rng_state()
    result = wrapgrad.train(model, data, epochs=3, eval_data=data, scheduler="cosine", **PGD, **RUN)
    assert torch.equal(torch.get_rng_state(), rng)
    assert isinstance(result, TrainResult)
    assert result.model is model
    assert not same(start, weights(model))
    assert not model.training  # the flags it came with
    assert all(p.grad is None for p in model.parameters())
    assert [r.epoch for r in result.history] == [1, 2, 3]
    first, last = result.history[0], result.history[-1]
    assert set(last.metrics) == {"loss", "ce_adv", "accuracy", "adv_accuracy"}
    assert last.loss < first.loss
    assert last.eval_accuracy == pytest.approx(wrapgrad.training.accuracy(model, *data))
    assert last.samples == 40
    assert last.lr == pytest.approx(0.0, abs=1e-12)  # the cosine schedule ends at 0
    assert result.to_dict()["history"][0]["metrics"]["loss"] == pytest.approx(first.loss)
    assert EpochRecord.from_dict(first.to_dict()) == first


def test_same_seed_same_weights_other_seed_other_weights(data) -> None:
    runs = [
        wrapgrad.train(tiny(), data, epochs=2, **{**PGD, **RUN, "seed": s}).model for s in (1, 1, 2)
    ]
    a, b, c = (weights(m) for m in runs)
    assert same(a, b)
    assert not same(a, c)


@pytest.mark.parametrize("use_loader", [False, True])
def test_resume_after_an_interrupted_epoch_is_bit_identical(tmp_path, data, use_loader) -> None:
    if use_loader:  # a DataLoader shuffles with torch's global RNG, which the loop checkpoints
        source = DataLoader(TensorDataset(*data), batch_size=8, shuffle=True)
    else:
        source = data
    full = wrapgrad.train(tiny(), source, epochs=3, **PGD, **RUN)

    class Interrupt:
        """The registered pgd objective, interrupted in the middle of epoch 2."""

        def __init__(self) -> None:
            self.inner = (
                wrapgrad.get_registry()
                .get("objective", "pgd")
                .factory(epsilon=0.1, steps=2, step_size=0.05)
            )
            self.config = self.inner.config  # the same identity as the pgd run
            self.name = "pgd"
            self.calls = 0

        @property
        def metrics(self):
            return self.inner.metrics

        def __call__(self, *args, **kwargs):
            self.calls += 1
            if self.calls == 8:  # 5 batches per epoch: the 3rd batch of epoch 2
                raise KeyboardInterrupt
            return self.inner(*args, **kwargs)

    model = tiny()
    with pytest.raises(KeyboardInterrupt):
        wrapgrad.train(model, source, Interrupt(), epochs=3, checkpoint_dir=tmp_path, **RUN)
    state = load_checkpoint(tmp_path / "checkpoint.pt")  # whole, and of epoch 1
    assert state["epoch"] == 1
    assert not list(tmp_path.glob(".*.tmp"))
    resumed = wrapgrad.train(
        model, source, epochs=3, checkpoint_dir=tmp_path, resume=True, **PGD, **RUN
    )
    assert resumed.resumed_from == 1
    assert [r.epoch for r in resumed.history] == [1, 2, 3]
    assert same(weights(resumed.model), weights(full.model))
    assert [r.metrics for r in resumed.history] == [r.metrics for r in full.history]
    # a fresh model resumed from the finished checkpoint gets the same weights without training
    again = wrapgrad.train(
        tiny(seed=9), source, epochs=3, checkpoint_dir=tmp_path, resume=True, **PGD, **RUN
    )
    assert again.resumed_from == 3
    assert same(weights(again.model), weights(full.model))


def test_resume_refuses_another_architecture_objective_or_setting(tmp_path, data) -> None:
    wrapgrad.train(tiny(), data, epochs=1, checkpoint_dir=tmp_path, **PGD, **RUN)
    for width, options, match in (
        (7, {**PGD, **RUN}, r"^model: .*another architecture"),
        (6, {"objective": "natural", **RUN}, r"^objective: .*another objective"),
        (6, {**PGD, "steps": 3, **RUN}, r"^objective"),
        (6, {**PGD, **RUN, "lr": 0.1}, r"^lr: .*lr=0.01"),
    ):
        with pytest.raises(WrapgradValueError, match=match):
            wrapgrad.train(
                tiny(width=width), data, epochs=2, checkpoint_dir=tmp_path, resume=True, **options
            )
    # resume=False starts afresh and overwrites
    fresh = wrapgrad.train(tiny(width=7), data, epochs=1, checkpoint_dir=tmp_path, **PGD, **RUN)
    assert fresh.resumed_from == 0


def test_checkpoints_never_run_pickled_code(tmp_path, data) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.makedirs, (str(marker),))

    torch.save({"format": "wrapgrad.train/1", "payload": Evil()}, tmp_path / "checkpoint.pt")
    with pytest.raises(WrapgradValueError, match=r"^checkpoint_dir: .*cannot be read"):
        wrapgrad.train(tiny(), data, epochs=1, checkpoint_dir=tmp_path, resume=True, **PGD, **RUN)
    assert not marker.exists()


def test_on_epoch_end_sees_each_epoch_and_can_stop(tmp_path, data) -> None:
    seen = []

    def callback(record, model):
        seen.append((record.epoch, isinstance(model, nn.Module)))
        return record.epoch == 2

    result = wrapgrad.train(
        tiny(), data, "natural", epochs=5, on_epoch_end=callback, checkpoint_dir=tmp_path, **RUN
    )
    assert seen == [(1, True), (2, True)]
    assert len(result.history) == 2
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 2
    # re-entrant: continue the stopped run (constant learning rate) to epoch 3
    more = wrapgrad.train(
        result.model, data, "natural", epochs=3, checkpoint_dir=tmp_path, resume=True, **RUN
    )
    assert [r.epoch for r in more.history] == [1, 2, 3]


def test_schedules_optimisers_autocast_and_objects(data) -> None:
    r = wrapgrad.train(
        tiny(),
        data,
        "natural",
        epochs=2,
        optimizer="sgd",
        optimizer_options={"momentum": 0.9},
        scheduler="one_cycle",
        max_grad_norm=1.0,
        **RUN,
    )
    assert r.history[-1].lr < 0.01 / 10  # one cycle ends far below its peak
    r = wrapgrad.train(tiny(), data, "natural", epochs=1, autocast="bfloat16", **RUN)
    assert r.history[0].loss == r.history[0].loss  # finite under bfloat16 autocast

    def plain(model, inputs, target, generator=None):  # an objective object without metrics
        return nn.functional.cross_entropy(model(inputs), target)

    r = wrapgrad.train(tiny(), data, plain, epochs=1, **RUN)
    assert r.objective == "plain"
    assert 0.0 <= r.history[0].accuracy <= 1.0  # the loop measured it


def _constant_objective(m, i, t, generator=None):
    return m(i).sum()


@pytest.mark.parametrize(
    ("source", "objective", "options", "error", "match"),
    [
        ("empty", "natural", {}, WrapgradValueError, r"^data: .*non-empty"),
        ("empty loader", "natural", {}, WrapgradValueError, r"^data: .*non-empty"),
        ("three labels", "natural", {}, WrapgradValueError, r"^data: .*one label"),
        ("inputs only", "natural", {}, WrapgradTypeError, r"^data"),
        ("data", "adv_aat", {"epsilon": 0.0}, WrapgradValueError, r"^epsilon"),
        ("data", "aat", {"ig_steps": 0}, WrapgradValueError, r"^ig_steps"),
        ("data", "adv_at", {}, UnknownNameError, r"did you mean 'adv_aat'"),
        ("data", "aat", {"lamb": 0.5}, UnknownNameError, r"^lamb: .*did you mean 'lam'"),
        ("data", "aat", {"epoch": 3}, UnknownNameError, r"^epoch: .*did you mean 'epochs'"),
        ("data", "natural", {"epochs": 0}, WrapgradValueError, r"^epochs"),
        ("data", "natural", {"optimizer": "lbfgs"}, WrapgradValueError, r"^optimizer"),
        ("data", _constant_objective, {"lam": 0.5}, WrapgradValueError, r"^lam"),
    ],
)
def test_bad_input_names_the_argument(data, source, objective, options, error, match) -> None:
    x, y = data
    sources = {
        "data": data,
        "empty": (x[:0], y[:0]),
        "empty loader": DataLoader(TensorDataset(x[:0], y[:0])),
        "three labels": (x, y[:3]),
        "inputs only": x,
    }
    with pytest.raises(error, match=match):
        wrapgrad.train(tiny(), sources[source], objective, **options)


def test_a_model_that_detaches_its_inputs_is_refused_where_gradients_are_needed(data) -> None:
    class Detached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(64, 3)

        def forward(self, z):
            return self.lin(z.detach().flatten(1))

    with pytest.raises(WrapgradValueError, match=r"^model: the objective needs attributions"):
        wrapgrad.train(Detached(), data, "aat", ig_steps=2, steps=1)
    r = wrapgrad.train(Detached(), data, "natural", epochs=1)  # natural needs no input gradients
    assert len(r.history) == 1


def test_wrapgrad_train_stays_the_function_after_submodule_imports() -> None:
    import importlib

    for module in ("wrapgrad.training", "wrapgrad.training.loop", "wrapgrad.training.checkpoint"):
        importlib.import_module(module)
    assert callable(wrapgrad.train)
    assert wrapgrad.train.__name__ == "train"


def test_a_third_party_objective_trains_by_name(install_plugin, data) -> None:
    install_plugin(
        "wg-margin",
        "wg_margin",
        '''
        import torch
        from wrapgrad import hookimpl
        from wrapgrad.records import ObjectiveSpec

        class Margin:
            """Multi-class hinge loss with a margin option."""
            def __init__(self, margin=1.0):
                self.margin = margin
                self.metrics = {}
            def __call__(self, model, inputs, target, generator=None):
                out = model(inputs)
                loss = torch.nn.functional.multi_margin_loss(out, target, margin=self.margin)
                self.metrics = {"loss": loss.detach(), "hinge": loss.detach()}
                return loss

        @hookimpl
        def wrapgrad_objectives():
            yield ObjectiveSpec(name="margin", factory=Margin, summary="hinge loss")
        ''',
    )
    reg = wrapgrad.Registry()
    result = wrapgrad.train(tiny(), data, "margin", epochs=3, margin=0.5, registry=reg, **RUN)
    assert result.objective == "margin"
    assert "hinge" in result.history[0].metrics
    assert result.history[-1].loss < result.history[0].loss
    with pytest.raises(UnknownNameError, match=r"did you mean 'margin'"):
        wrapgrad.train(tiny(), data, "margin", margn=0.5, registry=reg)
