"""Where a training epoch's batches come from.

A :class:`BatchSource` yields one epoch of ``(inputs, labels)`` batches; the loop only asks it for
``len(source)`` (steps per epoch, for the schedule) and ``source.epoch_batches(generator)``. Tensors
are shuffled by the loop's own generator (checkpointed, so a resumed run sees the same order); a
DataLoader shuffles with its own sampler.

Under ``torch.distributed`` the loop shards the data by :class:`ShardedBatches`: every rank draws
the same seeded permutation and cuts it into the same *global* batches of ``batch_size`` that a
single process forms; each rank takes its near-equal slice of every global batch. A source that
shards says so with ``epoch_shards(generator)``, yielding :class:`Shard` records that carry the
loss weight ``W n_r / N`` of a slice of ``n_r`` of the global batch's ``N`` samples on ``W``
ranks: DistributedDataParallel averages the ranks' gradients, so

.. math:: \\frac{1}{W}\\sum_r \\frac{W n_r}{N}\\,\\nabla \\bar\\ell_r
          = \\sum_r \\frac{n_r}{N}\\,\\nabla \\bar\\ell_r = \\nabla \\bar\\ell_{\\text{global}},

the gradient of the mean loss over the whole global batch (for objectives whose loss is a mean
over samples, as every built-in one is), whatever the split. A rank whose slice of a short last
batch is empty runs the batch's first sample with weight 0, so every rank takes part in every
step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Protocol

import attrs
import torch
from torch import Tensor

from wrapgrad.errors import WrapgradTypeError, WrapgradValueError

__all__ = [
    "BatchSource",
    "DataLoaderBatches",
    "Shard",
    "ShardedBatches",
    "TensorBatches",
    "batch_source",
    "global_batches",
    "sharded_source",
    "shards",
]


class BatchSource(Protocol):
    """Where an epoch's batches come from: ``len(source)`` batches per epoch, drawn with
    ``source.epoch_batches(generator)`` as ``(inputs, labels)`` pairs."""

    def __len__(self) -> int: ...

    def epoch_batches(self, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]: ...


class TensorBatches:
    """``(inputs, labels)`` tensors in batches of ``batch_size``, reshuffled each epoch by
    ``torch.randperm(n, generator=...)`` (the last batch may be smaller)."""

    def __init__(self, inputs: Tensor, labels: Tensor, batch_size: int) -> None:
        self.inputs, self.labels, self.batch_size = inputs, labels, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def epoch_batches(self, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        for b in global_batches(len(self.labels), self.batch_size, generator):
            b = b.to(self.inputs.device)
            yield self.inputs[b], self.labels[b]


class DataLoaderBatches:
    """A ``torch.utils.data.DataLoader`` of ``(inputs, labels)`` batches; its own sampler
    shuffles (reproducibly when it draws from torch's global RNG, the default, or from a
    generator you seed)."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def epoch_batches(self, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        for i, batch in enumerate(self.loader):
            yield _pair(batch, i)


def batch_source(data: Any, batch_size: int) -> BatchSource:
    """The :class:`BatchSource` of ``data`` (``(inputs, labels)`` tensors or a DataLoader), with
    errors naming ``data`` for anything else or an empty set."""
    from torch.utils.data import DataLoader

    if isinstance(data, DataLoader):
        try:
            n = len(data)
        except TypeError:
            raise WrapgradTypeError(
                "data: the DataLoader has no length (an IterableDataset); pass a map-style data "
                "set or (inputs, labels) tensors"
            ) from None
        if n == 0:
            raise WrapgradValueError("data: expected a non-empty data set, got an empty DataLoader")
        return DataLoaderBatches(data)
    if (
        not isinstance(data, (tuple, list))
        or len(data) != 2
        or not all(isinstance(t, Tensor) for t in data)
    ):
        raise WrapgradTypeError(
            f"data: expected (inputs, labels) tensors or a torch DataLoader, got "
            f"{type(data).__name__}"
        )
    inputs, labels = data
    if inputs.dim() == 0 or inputs.shape[0] == 0:
        raise WrapgradValueError("data: expected a non-empty data set, got no samples")
    if labels.dim() == 0 or labels.shape[0] != inputs.shape[0]:
        raise WrapgradValueError(
            f"data: expected one label per input ({inputs.shape[0]}), got labels of shape "
            f"{tuple(labels.shape)}"
        )
    if not inputs.is_floating_point():
        raise WrapgradTypeError(f"data: expected floating-point inputs, got dtype {inputs.dtype}")
    return TensorBatches(inputs, labels, batch_size)


# -- sharding over ranks -------------------------------------------------------------------------
@attrs.frozen
class Shard:
    """A rank's part of one global batch: its ``inputs`` and ``labels``, the ``weight`` of its
    mean loss (module docstring) and how many ``samples`` it holds (0 for the weight-0
    stand-in of an empty slice)."""

    inputs: Tensor
    labels: Tensor
    weight: float
    samples: int


def global_batches(
    n: int, batch_size: int, generator: torch.Generator | None, drop_last: bool = False
) -> list[Tensor]:
    """The index batches a single process forms over ``n`` samples: a permutation drawn from
    ``generator`` (None: in order) cut into batches of ``batch_size`` (the last one smaller
    unless ``drop_last``).

    >>> [b.tolist() for b in global_batches(5, 2, None)]
    [[0, 1], [2, 3], [4]]
    """
    order = torch.arange(n) if generator is None else torch.randperm(n, generator=generator)
    batches = list(order.split(batch_size))
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def _slice(batch: Tensor, rank: int, size: int) -> tuple[Tensor, float]:
    """Rank ``rank``'s slice of a global index batch and its loss weight ``size n_r / N``; an
    empty slice becomes the batch's first index with weight 0."""
    part = torch.tensor_split(batch, size)[rank]
    if len(part) == 0:
        return batch[:1], 0.0
    return part, size * len(part) / len(batch)


@attrs.frozen(eq=False)
class ShardedBatches:
    """Rank ``rank`` of ``size``'s shards of the global batches of a data set: ``(inputs,
    labels)`` tensors indexed directly, or a map-style data set loaded through a DataLoader with
    the original loader's ``collate_fn``, workers and memory pinning.

    ``len(source)`` is the number of global batches (the same on every rank), so the schedule's
    length does not depend on the number of ranks.
    """

    data: Any = attrs.field(repr=False)
    """``(inputs, labels)`` tensors, or the map-style data set of ``loader``."""
    batch_size: int
    rank: int
    size: int
    shuffle: bool = attrs.field(default=True, kw_only=True)
    drop_last: bool = attrs.field(default=False, kw_only=True)
    loader: Any = attrs.field(default=None, kw_only=True, repr=False)
    """The DataLoader ``data`` came from (its collate function, workers and pinning are kept)."""

    @property
    def n(self) -> int:
        """The number of items."""
        return len(self.data[1]) if self.loader is None else len(self.data)

    def __len__(self) -> int:
        if self.drop_last:
            return self.n // self.batch_size
        return math.ceil(self.n / self.batch_size)

    def epoch_shards(self, generator: torch.Generator) -> Iterator[Shard]:
        batches = global_batches(
            self.n, self.batch_size, generator if self.shuffle else None, self.drop_last
        )
        parts = [_slice(b, self.rank, self.size) for b in batches]
        if self.loader is None:
            inputs, labels = self.data
            for idx, weight in parts:
                idx = idx.to(inputs.device)
                yield Shard(inputs[idx], labels[idx], weight, len(idx) if weight else 0)
            return
        from torch.utils.data import DataLoader

        loader = DataLoader(
            self.data,
            batch_sampler=[idx.tolist() for idx, _ in parts],
            collate_fn=self.loader.collate_fn,
            num_workers=self.loader.num_workers,
            pin_memory=self.loader.pin_memory,
            worker_init_fn=self.loader.worker_init_fn,
        )
        for i, ((idx, weight), batch) in enumerate(zip(parts, loader, strict=True)):
            x, y = _pair(batch, i)
            yield Shard(x, y, weight, len(idx) if weight else 0)

    def epoch_batches(self, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        for shard in self.epoch_shards(generator):
            yield shard.inputs, shard.labels


def _pair(batch: Any, i: int) -> tuple[Tensor, Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise WrapgradTypeError(
            f"data: expected the DataLoader to yield (inputs, labels) batches, got "
            f"{type(batch).__name__} at batch {i}"
        )
    return batch[0], batch[1]


def sharded_source(data: Any, batch_size: int, rank: int, size: int) -> ShardedBatches:
    """The :class:`ShardedBatches` of ``data`` (checked as :func:`batch_source` checks it) for
    rank ``rank`` of ``size``. A DataLoader is re-sharded from its data set: its ``batch_size``
    is the global batch size, and it shuffles (with the loop's generator) if its sampler is a
    ``RandomSampler`` or a shuffling ``DistributedSampler``."""
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

    batch_source(data, batch_size)  # the same checks
    if not isinstance(data, DataLoader):
        return ShardedBatches(tuple(data), batch_size, rank, size)
    sampler = data.sampler
    if isinstance(sampler, DistributedSampler):
        shuffle = bool(sampler.shuffle)
    elif isinstance(sampler, (RandomSampler, SequentialSampler)):
        shuffle = isinstance(sampler, RandomSampler)
    else:
        raise WrapgradTypeError(
            f"data: a distributed run shards a DataLoader's data set itself and cannot follow "
            f"its {type(sampler).__name__}; use shuffle=True/False, or pass (inputs, labels) "
            f"tensors"
        )
    if data.batch_size is None:
        raise WrapgradValueError(
            "data: a distributed run needs the DataLoader's batch_size (the global batch size); "
            "this one uses a custom batch_sampler"
        )
    return ShardedBatches(
        data.dataset,
        int(data.batch_size),
        rank,
        size,
        shuffle=shuffle,
        drop_last=bool(data.drop_last),
        loader=data,
    )


def shards(source: BatchSource, generator: torch.Generator) -> Iterator[Shard]:
    """One epoch of ``source`` as :class:`Shard` records (weight 1 for a source that does not
    shard)."""
    sharded = getattr(source, "epoch_shards", None)
    if sharded is not None:
        yield from sharded(generator)
        return
    for x, y in source.epoch_batches(generator):
        yield Shard(x, y, 1.0, len(y))
