"""The engine draws the next weight sample on its helper thread (loop strategy, CPU): the same
numbers as drawing in turn, an error there reaches the caller, and a forked child draws too."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest
import torch
from wrapgrad_noise.perturbers import InputGaussian, WeightMultiplicative

import wrapgrad.engine.sampler as sampler_module
from tests.conftest import SmallCNN
from wrapgrad.differentiable import differentiable_explainer
from wrapgrad.engine import monte_carlo
from wrapgrad.functional import ModelGuard
from wrapgrad.registry import get_registry


def saliency(differentiable: bool = False) -> object:
    if differentiable:
        return differentiable_explainer("saliency")
    return get_registry().get("explainer", "saliency").factory()


class Recording(WeightMultiplicative):
    """Multiplicative weight noise that records the thread of every draw and can fail on one."""

    def __init__(self, sigma: float, fail_on: int | None = None) -> None:
        super().__init__(sigma)
        self.threads: list[str] = []
        self.fail_on = fail_on

    def sample(self, w: torch.Tensor, n: int, *, generator=None, guide=None) -> torch.Tensor:
        self.threads.append(threading.current_thread().name)
        if self.fail_on is not None and len(self.threads) > self.fail_on:
            raise RuntimeError("perturber failed on purpose")
        return super().sample(w, n, generator=generator)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))


def run(model, x, weight_sampler, **kw) -> torch.Tensor:
    kw.setdefault("n_models", 5)
    return monte_carlo(
        saliency(kw.get("create_graph", False)),
        model,
        x,
        1,
        weight_sampler=weight_sampler,
        seed=7,
        strategy="loop",
        **kw,
    )


@pytest.mark.parametrize("n_inputs", [1, 3])
def test_drawn_ahead_equals_drawn_in_turn(x, monkeypatch, n_inputs: int) -> None:
    model = SmallCNN().eval()
    noise = {"n_inputs": n_inputs, "input_sampler": InputGaussian(0.1) if n_inputs > 1 else None}
    ahead = Recording(0.3)
    a = run(model, x, ahead, **noise)
    monkeypatch.setattr(sampler_module, "PREFETCH_BYTES", 0)
    in_turn = Recording(0.3)
    b = run(model, x, in_turn, **noise)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    params = len(dict(model.named_parameters()))
    # Sample 0 is drawn by the caller, samples 1..4 on the helper thread; in turn: all by the
    # caller.
    assert ahead.threads[:params] == [threading.current_thread().name] * params
    assert all(t.startswith("wrapgrad-draw") for t in ahead.threads[params:])
    assert len(ahead.threads) == 5 * params
    assert in_turn.threads == [threading.current_thread().name] * (5 * params)


def test_no_drawing_ahead_for_maps_with_a_graph(x) -> None:
    model = SmallCNN().eval().double()
    p = Recording(0.3)
    out = run(model, x.double(), p, create_graph=True)
    assert out.requires_grad
    assert set(p.threads) == {threading.current_thread().name}


def test_an_error_on_the_helper_thread_reaches_the_caller(x) -> None:
    model = SmallCNN().eval()
    params = len(dict(model.named_parameters()))
    failing = Recording(0.3, fail_on=2 * params)  # fails while drawing weight sample 2, ahead
    with ModelGuard(model), pytest.raises(RuntimeError, match="failed on purpose"):
        run(model, x, failing)
    assert any(t.startswith("wrapgrad-draw") for t in failing.threads)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
def test_a_forked_child_draws_ahead_on_a_thread_of_its_own(x) -> None:
    model = SmallCNN().eval()
    expected = run(model, x, WeightMultiplicative(0.3))  # the parent's helper thread now exists
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's status is the assertion
        status = 1
        try:
            p = Recording(0.3)
            ok = torch.equal(run(model, x, p), expected)
            status = 0 if ok and any(t.startswith("wrapgrad-draw") for t in p.threads) else 3
        finally:
            sys.stdout.flush()
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


class Slow(WeightMultiplicative):
    """Weight noise whose every draw takes a while, counting draws started and finished."""

    def __init__(self, sigma: float) -> None:
        super().__init__(sigma)
        self.started = self.finished = 0

    def sample(self, w: torch.Tensor, n: int, *, generator=None, guide=None) -> torch.Tensor:
        self.started += 1
        time.sleep(0.05)
        out = super().sample(w, n, generator=generator)
        self.finished += 1
        return out


def test_no_draw_is_left_running_when_the_explainer_raises(x) -> None:
    """The explainer fails on weight sample 0 while sample 1 is drawn ahead: the call returns
    only after that draw, so nothing reads the parameters afterwards."""

    def failing(model, inputs, target=None, **kwargs):
        raise RuntimeError("explainer failed on purpose")

    model = SmallCNN().eval()
    p = Slow(0.3)
    with ModelGuard(model), pytest.raises(RuntimeError, match="explainer failed"):
        monte_carlo(failing, model, x, 1, weight_sampler=p, n_models=3, seed=0, strategy="loop")
    params = len(dict(model.named_parameters()))
    assert p.started == p.finished == 2 * params  # sample 0 in turn, sample 1 ahead


def test_each_explaining_thread_has_its_own_drawing_thread() -> None:
    got: list[object] = []
    threads = [
        threading.Thread(target=lambda: got.append(sampler_module._helper_thread()))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got[0] is not got[1]
    assert sampler_module._helper_thread() is sampler_module._helper_thread()
