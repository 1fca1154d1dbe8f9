"""A data set held in memory: what a registered data set's factory may return.

:class:`InMemoryDataset` implements :class:`wrapgrad.protocols.LabelledDataset`, the contract
that :func:`wrapgrad.load_dataset`'s callers (pipelines, the training commands, calibration)
read; a plugin's factory returns one (``wrapgrad_data``'s data sets and the example plugin's
``bars`` do) or any object of its own with the same attributes.

>>> import torch
>>> data = InMemoryDataset(torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0]), num_classes=2,
...                        name="tiny", masks={"top": torch.zeros(3, 1, 2, 2, dtype=torch.bool)})
>>> len(data), int(data[1][1]), data
(3, 1, InMemoryDataset('tiny', n=3, shape=(1, 2, 2), masks=['top']))
>>> data.subset(2)
InMemoryDataset('tiny', n=2, shape=(1, 2, 2), masks=['top'])
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from wrapgrad.errors import WrapgradValueError

__all__ = ["InMemoryDataset"]


class InMemoryDataset(Dataset):
    """Labelled inputs held in memory; ``dataset[i]`` is ``(input, label)``.

    Attributes:
        inputs: float tensor ``(N, ...)``.
        labels: int64 tensor ``(N,)``.
        masks: ground-truth masks by name (e.g. ``"digit"``), each a bool tensor with ``N`` rows
            aligned with ``inputs``; empty for data sets without masks.
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
        self.masks = dict(masks or {})
        for key, mask in self.masks.items():
            if mask.shape[0] != inputs.shape[0]:
                raise WrapgradValueError(
                    f"masks[{key!r}]: expected {inputs.shape[0]} rows (one per input), got "
                    f"{mask.shape[0]}"
                )
        self.inputs = inputs
        self.labels = labels
        self.num_classes = num_classes
        self.name = name

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def __getitem__(self, index: Any) -> tuple[Tensor, Tensor]:
        return self.inputs[index], self.labels[index]

    def tensors(self) -> tuple[Tensor, Tensor]:
        """``(inputs, labels)``: the whole set as two tensors (what ``wrapgrad.calibrate`` takes)."""
        return self.inputs, self.labels

    def subset(self, n: int) -> InMemoryDataset:
        """The first ``n`` items (masks included) as a new data set of the same class."""
        out = copy.copy(self)
        out.inputs, out.labels = self.inputs[:n], self.labels[:n]
        out.masks = {k: v[:n] for k, v in self.masks.items()}
        return out

    def __repr__(self) -> str:
        shape = tuple(self.inputs.shape[1:])
        masks = f", masks={sorted(self.masks)}" if self.masks else ""
        return f"{type(self).__name__}({self.name!r}, n={len(self)}, shape={shape}{masks})"
