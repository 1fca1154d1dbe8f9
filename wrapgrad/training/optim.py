"""The optimiser, learning-rate schedule and mixed precision of a training run, by name."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from wrapgrad.errors import WrapgradValueError
from wrapgrad.training.records import TrainConfig

__all__ = ["autocast_context", "build_optimizer", "build_scheduler"]


def build_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    classes = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    cls = classes[config.optimizer]
    try:
        return cls(
            params,
            lr=config.lr,
            weight_decay=config.weight_decay,
            **dict(config.optimizer_options),
        )
    except TypeError as exc:
        raise WrapgradValueError(
            f"optimizer_options: not accepted by torch.optim.{cls.__name__} ({exc})"
        ) from None


def build_scheduler(opt: torch.optim.Optimizer, config: TrainConfig, steps: int) -> Any:
    """The schedule of ``config`` (None for a constant rate) over ``steps`` optimiser steps, with
    ``config.scheduler_options``; ``"plateau"`` is ``ReduceLROnPlateau(mode="min")``, stepped by
    the loop once per epoch with the epoch's mean loss."""
    sched = torch.optim.lr_scheduler
    options = dict(config.scheduler_options)
    builders = {
        "one_cycle": lambda: sched.OneCycleLR(opt, max_lr=config.lr, total_steps=steps, **options),
        "cosine": lambda: sched.CosineAnnealingLR(opt, T_max=steps, **options),
        "plateau": lambda: sched.ReduceLROnPlateau(opt, mode="min", **options),
    }
    if config.scheduler is None:
        if options:
            raise WrapgradValueError(
                f"scheduler_options: given {sorted(options)} without a scheduler; set scheduler"
            )
        return None
    try:
        return builders[config.scheduler]()
    except TypeError as exc:
        raise WrapgradValueError(
            f"scheduler_options: not accepted by the {config.scheduler!r} schedule ({exc})"
        ) from None


def autocast_context(config: TrainConfig, device: torch.device) -> Any:
    if config.autocast is None:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if config.autocast == "bfloat16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
