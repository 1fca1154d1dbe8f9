"""The records of a training run: its configuration, one row of history per epoch, the result."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from torch import nn

__all__ = [
    "FIXED_LENGTH_SCHEDULERS",
    "OPTIMIZERS",
    "SCHEDULERS",
    "EpochRecord",
    "TrainConfig",
    "TrainResult",
]

#: Optimisers by name (``torch.optim`` classes).
OPTIMIZERS = ("adam", "adamw", "sgd")
#: Learning-rate schedules by name: ``None`` (constant), ``"one_cycle"`` (``OneCycleLR`` with
#: peak ``lr``) and ``"cosine"`` (``CosineAnnealingLR`` to 0), stepped once per optimiser step;
#: ``"plateau"`` (``ReduceLROnPlateau`` on the epoch's mean training loss), stepped once per epoch.
SCHEDULERS = (None, "one_cycle", "cosine", "plateau")
#: The schedules whose shape is fixed by the run's length (``epochs`` is part of a resumed run's
#: identity for these only).
FIXED_LENGTH_SCHEDULERS = ("one_cycle", "cosine")
AUTOCAST = (None, "bfloat16", "float16")


def _items(value: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(dict(value or {}).items()))


@attrs.frozen(kw_only=True)
class TrainConfig:
    """Everything :func:`wrapgrad.train` was asked to do besides the model, the data and the
    objective (the keyword arguments of the same names)."""

    epochs: int
    """Train until this many epochs are done (a resumed run counts the checkpoint's)."""
    batch_size: int
    lr: float
    """Learning rate (the peak of the one-cycle schedule)."""
    optimizer: str = "adam"
    """``"adam"``, ``"adamw"`` or ``"sgd"``."""
    weight_decay: float = 0.0
    optimizer_options: tuple[tuple[str, Any], ...] = attrs.field(default=(), converter=_items)
    """Other keyword arguments of the optimiser (``betas``, ``momentum``, ``nesterov``, ...)."""
    scheduler: str | None = None
    """See :data:`SCHEDULERS`."""
    scheduler_options: tuple[tuple[str, Any], ...] = attrs.field(default=(), converter=_items)
    """Other keyword arguments of the schedule (``factor``, ``patience`` of ``"plateau"``;
    ``pct_start`` of ``"one_cycle"``, ...)."""
    max_grad_norm: float | None = None
    """Clip the gradients' global l2 norm to this (None: no clipping)."""
    seed: int = 0
    """Seeds the shuffling (``seed``), the objective's generator (``seed + 1``) and, inside the
    run only, torch's global RNG (``seed + 2``, for dropout); the caller's global RNG state is
    restored afterwards."""
    autocast: str | None = None
    """Mixed precision: None, ``"bfloat16"`` or ``"float16"`` (with a gradient scaler)."""
    checkpoint_dir: Path | None = attrs.field(
        default=None, converter=attrs.converters.optional(Path)
    )
    resume: bool = False
    progress: bool = False

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share with the checkpoint's run (everything that
        shapes the weights; ``epochs`` too where the schedule depends on the run's length)."""
        keep = [
            "batch_size",
            "lr",
            "optimizer",
            "weight_decay",
            "optimizer_options",
            "scheduler",
            "max_grad_norm",
            "seed",
            "autocast",
        ]
        if self.scheduler_options:  # only when given: older checkpoints keep their fingerprint
            keep.append("scheduler_options")
        if self.scheduler in FIXED_LENGTH_SCHEDULERS:
            keep.append("epochs")
        return {k: getattr(self, k) for k in keep}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@attrs.frozen(kw_only=True)
class EpochRecord:
    """One epoch of a run."""

    epoch: int
    """1-based."""
    metrics: Mapping[str, float]
    """The objective's loss parts and accuracies (``loss``, ``ce``/``ce_adv``, ``attribution``,
    ``accuracy``, ...), averaged over the epoch's samples."""
    eval_accuracy: float | None = None
    """Natural accuracy on ``eval_data`` after the epoch (None without it)."""
    lr: float = 0.0
    """The learning rate at the end of the epoch."""
    seconds: float = 0.0
    samples: int = 0
    """Training samples seen in the epoch."""

    @property
    def loss(self) -> float:
        return float(self.metrics["loss"])

    @property
    def accuracy(self) -> float | None:
        """Natural accuracy on the epoch's training batches (before each step)."""
        value = self.metrics.get("accuracy")
        return None if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "metrics": {k: _finite(float(v)) for k, v in self.metrics.items()},
            "eval_accuracy": self.eval_accuracy,
            "lr": self.lr,
            "seconds": self.seconds,
            "samples": self.samples,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EpochRecord:
        metrics = {k: float("nan") if v is None else float(v) for k, v in d["metrics"].items()}
        return cls(
            epoch=int(d["epoch"]),
            metrics=metrics,
            eval_accuracy=d.get("eval_accuracy"),
            lr=float(d.get("lr", 0.0)),
            seconds=float(d.get("seconds", 0.0)),
            samples=int(d.get("samples", 0)),
        )


@attrs.frozen(kw_only=True)
class TrainResult:
    """What :func:`wrapgrad.train` returns."""

    model: nn.Module
    """The model it was given, trained in place."""
    history: tuple[EpochRecord, ...]
    """One record per epoch done, the checkpoint's earlier epochs included."""
    objective: str
    """The objective's name."""
    config: TrainConfig
    checkpoint: Path | None = None
    """The checkpoint file (None without ``checkpoint_dir``)."""
    resumed_from: int = 0
    """The epoch the run resumed after (0: a fresh run)."""
    seconds: float = 0.0
    """Wall-clock time of this call."""
    world_size: int = 1
    """How many processes trained (``torch.distributed``'s world size; 1 without it)."""

    @property
    def final(self) -> EpochRecord | None:
        """The last epoch's record."""
        return self.history[-1] if self.history else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no weights)."""
        return {
            "objective": self.objective,
            "epochs": len(self.history),
            "resumed_from": self.resumed_from,
            "seconds": self.seconds,
            "world_size": self.world_size,
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "config": {
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in attrs.asdict(self.config, recurse=False).items()
            },
            "history": [r.to_dict() for r in self.history],
        }
