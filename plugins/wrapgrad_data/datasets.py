"""The torch Dataset every embedded data set returns, and deterministic train/test splits."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor
from torch.utils.data import Dataset

from wrapgrad.errors import WrapgradValueError

__all__ = ["SPLITS", "ImageDataset", "split_indices"]

SPLITS = ("train", "test", "all")


class ImageDataset(Dataset):
    """Images and labels held in memory; ``dataset[i]`` is ``(image, label)``.

    Attributes:
        inputs: float tensor ``(N, C, H, W)`` with values in ``[0, 1]``.
        labels: int64 tensor ``(N,)``.
        masks: ground-truth masks by name (e.g. ``"digit"``, ``"square"``), each a bool tensor
            ``(N, 1, H, W)`` aligned with ``inputs``; empty for data sets without masks.
        num_classes: number of classes.
        name: the data set's registered name.
    """

    def __init__(
        self,
        inputs: Tensor,
        labels: Tensor,
        *,
        num_classes: int,
        name: str,
        masks: Mapping[str, Tensor] | None = None,
    ) -> None:
        if inputs.shape[0] != labels.shape[0]:
            raise WrapgradValueError(
                f"labels: expected {inputs.shape[0]} labels (one per input), got {labels.shape[0]}"
            )
        self.inputs = inputs
        self.labels = labels
        self.masks = dict(masks or {})
        self.num_classes = num_classes
        self.name = name

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.inputs[index], self.labels[index]

    def tensors(self) -> tuple[Tensor, Tensor]:
        """``(inputs, labels)``: the whole set as two tensors (what ``wrapgrad.calibrate`` takes)."""
        return self.inputs, self.labels

    def subset(self, n: int) -> ImageDataset:
        """The first ``n`` items (masks included) as a new data set."""
        return ImageDataset(
            self.inputs[:n],
            self.labels[:n],
            num_classes=self.num_classes,
            name=self.name,
            masks={k: v[:n] for k, v in self.masks.items()},
        )

    def __repr__(self) -> str:
        shape = tuple(self.inputs.shape[1:])
        masks = f", masks={sorted(self.masks)}" if self.masks else ""
        return f"ImageDataset({self.name!r}, n={len(self)}, shape={shape}{masks})"


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
