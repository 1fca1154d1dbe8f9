"""The ``bars`` data set: a bar on noise, horizontal (class 0) or vertical (class 1).

Each 1x8x8 image holds one bright bar (value 1) in a random row (class 0) or column (class 1)
on uniform background noise in ``[0, noise]``; the ``"bar"`` mask marks its pixels, so
localisation metrics have a ground truth. Everything is generated from ``seed``: the same seed
gives the same images, and train and test are disjoint parts of one generated set.
"""

from __future__ import annotations

import torch

from wrapgrad.checks import check_choice, check_in_range, check_positive_int
from wrapgrad.datasets import InMemoryDataset

__all__ = ["load_bars"]

SIZE = 8


def load_bars(
    split: str = "train",
    seed: int = 0,
    *,
    n: int = 1024,
    noise: float = 0.3,
    test_fraction: float = 0.25,
) -> InMemoryDataset:
    """The ``bars`` data set.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.
        seed: seeds the generator (same seed, same images and split).
        n: images generated in all (train + test).
        noise: the background's upper bound, in [0, 1).
        test_fraction: the share held out for ``"test"``.

    Returns:
        A :class:`wrapgrad.datasets.InMemoryDataset` named ``"bars"`` with two classes and the
        mask ``"bar"`` (any object with the attributes of
        :class:`wrapgrad.protocols.LabelledDataset` would do).

    >>> data = load_bars("test", n=8)
    >>> len(data), tuple(data[0][0].shape), data.masks["bar"][0].sum().item()
    (2, (1, 8, 8), 8)
    """
    check_choice(split, "split", ("train", "test", "all"))
    n = check_positive_int(n, "n", minimum=2)
    noise = check_in_range(noise, "noise", 0.0, 1.0, high_open=True)
    test_fraction = check_in_range(
        test_fraction, "test_fraction", 0.0, 1.0, low_open=True, high_open=True
    )
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    where = torch.randint(0, SIZE, (n,), generator=g)
    line = torch.arange(SIZE)
    rows = (line.reshape(1, SIZE, 1) == where.reshape(n, 1, 1)).expand(n, SIZE, SIZE)
    bar = torch.where(labels.reshape(n, 1, 1) == 0, rows, rows.transpose(1, 2)).unsqueeze(1)
    images = noise * torch.rand((n, 1, SIZE, SIZE), generator=g)
    images = torch.where(bar, torch.ones_like(images), images)
    n_test = max(1, round(n * test_fraction))
    part = {"train": slice(n_test, None), "test": slice(0, n_test), "all": slice(None)}[split]
    return InMemoryDataset(
        images[part], labels[part], num_classes=2, name="bars", masks={"bar": bar[part]}
    )
