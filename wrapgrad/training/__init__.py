"""The one training loop (:func:`train`), its records and its checkpoints.

``wrapgrad.train`` is :func:`wrapgrad.training.loop.train`; the package is named ``training`` so
that importing it never shadows the function on the ``wrapgrad`` namespace.
"""

from __future__ import annotations

from wrapgrad.training.batches import BatchSource, DataLoaderBatches, TensorBatches
from wrapgrad.training.checkpoint import checkpoint_path, load_checkpoint
from wrapgrad.training.loop import accuracy, train
from wrapgrad.training.records import EpochRecord, TrainConfig, TrainResult

__all__ = [
    "BatchSource",
    "DataLoaderBatches",
    "EpochRecord",
    "TensorBatches",
    "TrainConfig",
    "TrainResult",
    "accuracy",
    "checkpoint_path",
    "load_checkpoint",
    "train",
]
