"""Shared fixtures: small models, a fresh plugin registry per test, fake installed plugins."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from wrapgrad.registry import Registry, use_registry


def pytest_configure(config: pytest.Config) -> None:
    # The test models are tiny: one intra-op thread is faster than two fighting over two cores
    # (measured up to 25x on Lime). WRAPGRAD_TEST_THREADS overrides.
    torch.set_num_threads(int(os.environ.get("WRAPGRAD_TEST_THREADS", "1")))


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op torch thread for a whole module, whatever ``WRAPGRAD_TEST_THREADS`` says
    (the evaluation tests' tiny models run fastest on one), restored after. A module asks for
    it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    from ._trained import one_thread

    with one_thread():
        yield


class SmallCNN(nn.Module):
    """1x8x8 images -> 4 classes; ReLU conv net with a named layer tree (``features.0`` ...)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 4))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


class MultiInputNet(nn.Module):
    """Two inputs (an image and a vector) -> 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.conv = nn.Conv2d(1, 2, 3)
        self.img = nn.Linear(2 * 6 * 6, 5)
        self.vec = nn.Linear(4, 5)
        self.head = nn.Linear(5, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(
        self, image: torch.Tensor, vector: torch.Tensor, scale: float = 1.0
    ) -> torch.Tensor:
        h = torch.relu(self.img(torch.relu(self.conv(image)).flatten(1))) + self.vec(vector)
        return self.head(h) * scale


@pytest.fixture
def cnn() -> SmallCNN:
    return SmallCNN().eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))


@pytest.fixture
def labels() -> torch.Tensor:
    return torch.tensor([0, 1, 2, 3])


@pytest.fixture
def registry() -> Iterator[Registry]:
    """A fresh registry (entry points loaded anew) installed as the process-wide one."""
    reg = Registry()
    with use_registry(reg):
        yield reg


@pytest.fixture
def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """Install a plugin distribution into a temporary site directory on ``sys.path``.

    ``install_plugin(dist, module, source, version="1.0")`` writes ``module.py`` and a
    ``dist-info`` with an entry point ``module = module`` in the group ``wrapgrad``, exactly what
    ``pip install`` leaves behind, so ``importlib.metadata`` discovers it.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    added: list[str] = []

    def install(dist: str, module: str, source: str, version: str = "1.0") -> str:
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[wrapgrad]\n{module} = {module}\n")
        added.append(module)
        import importlib

        importlib.invalidate_caches()
        return module

    yield install
    for module in added:
        sys.modules.pop(module, None)
