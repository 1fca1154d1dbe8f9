"""The torch Dataset every embedded data set returns, and deterministic train/test splits."""

from __future__ import annotations

import torch
from torch import Tensor

from wrapgrad.datasets import InMemoryDataset
from wrapgrad.errors import WrapgradValueError

__all__ = ["SPLITS", "ImageDataset", "split_indices"]

SPLITS = ("train", "test", "all")


class ImageDataset(InMemoryDataset):
    """Images and labels held in memory (:class:`wrapgrad.datasets.InMemoryDataset`);
    ``dataset[i]`` is ``(image, label)``.

    Attributes:
        inputs: float tensor ``(N, C, H, W)`` with values in ``[0, 1]``.
        labels: int64 tensor ``(N,)``.
        masks: ground-truth masks by name (e.g. ``"digit"``, ``"square"``), each a bool tensor
            ``(N, 1, H, W)`` aligned with ``inputs``; empty for data sets without masks.
        num_classes: number of classes.
        name: the data set's registered name.
    """


def split_indices(n: int, split: str, seed: int, test_fraction: float) -> Tensor:
    """Indices of ``split`` in a seeded random permutation of ``range(n)``.

    The last ``round(test_fraction * n)`` indices of the permutation form the test split, the
    rest the training split; ``"all"`` is the whole permutation.
    """
    if split not in SPLITS:
        raise WrapgradValueError(f"split: expected one of {SPLITS}, got {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise WrapgradValueError(
            f"test_fraction: expected a number in (0, 1), got {test_fraction!r}"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    n_test = round(test_fraction * n)
    if split == "train":
        return perm[: n - n_test]
    if split == "test":
        return perm[n - n_test :]
    return perm
