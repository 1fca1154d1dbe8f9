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
    if config.scheduler == "one_cycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps)
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    return None


def autocast_context(config: TrainConfig, device: torch.device) -> Any:
    if config.autocast is None:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if config.autocast == "bfloat16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
