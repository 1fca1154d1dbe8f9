"""Where a training epoch's batches come from.

A :class:`BatchSource` yields one epoch of ``(inputs, labels)`` batches; the loop only asks it for
``len(source)`` (steps per epoch, for the schedule) and ``source.epoch_batches(generator)``. Tensors
are shuffled by the loop's own generator (checkpointed, so a resumed run sees the same order); a
DataLoader shuffles with its own sampler. A distributed run adds a source that yields its rank's
shard.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import Tensor

from wrapgrad.errors import WrapgradTypeError, WrapgradValueError

__all__ = ["BatchSource", "DataLoaderBatches", "TensorBatches", "batch_source"]


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
        perm = torch.randperm(len(self.labels), generator=generator)
        perm = perm.to(self.inputs.device)
        for i in range(0, len(perm), self.batch_size):
            b = perm[i : i + self.batch_size]
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
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise WrapgradTypeError(
                    f"data: expected the DataLoader to yield (inputs, labels) batches, got "
                    f"{type(batch).__name__} at batch {i}"
                )
            yield batch[0], batch[1]


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
