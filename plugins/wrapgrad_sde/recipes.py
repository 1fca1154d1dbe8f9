"""The three models of the paper's comparison, built and trained one way.

Jha et al. (2022) compare a standard ResNet, the neural SDE with Brownian noise and the SDE with
attribution-driven noise, the ResNet being "the Neural SDE with zero noise". Here all three are
:func:`wrapgrad.to_sde` conversions of one registered model initialised from one seed, trained
by :func:`wrapgrad.sde.train_sde` with the same options and seed (same initial weights, same
batches, same budget):

* ``resnet``: ``sigma=0`` (bit for bit the plain network, in training too);
* ``brownian``: ``noise="brownian"``, ``Σ = sigma``;
* ``shaped``: ``noise="attribution_shaped"``, ``Σ_next = sigma · |Â(x)|``, the maps refreshed
  after every round.

The converted models are held in the ``channels_last`` memory format (the same values; on CPU
their convolutions train and explain faster, measured at one torch thread). A trained model is
kept under ``$WRAPGRAD_CACHE/sde/<key>/`` (else ``~/.cache/wrapgrad``) as the loop's checkpoint,
``key`` a hash of everything that determines the weights, so a second run resumes the finished
run (nothing is trained again).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor, nn

__all__ = ["KINDS", "LABELS", "KindRun", "build_model", "cache_dir", "convert", "train_kind"]

#: The kinds of the comparison and the to_sde options each one means.
KINDS: dict[str, dict[str, Any]] = {
    "resnet": {"noise": "brownian", "sigma": 0.0},
    "brownian": {"noise": "brownian"},
    "shaped": {"noise": "attribution_shaped"},
}
#: Their labels in reports (the paper's column names, shortened).
LABELS = {"resnet": "ResNet", "brownian": "Brownian", "shaped": "Shaped"}
#: Bump when training changes the weights of a cached model.
CACHE_VERSION = 2  # 2: trained in channels_last memory format


def build_model(name: str, in_channels: int, num_classes: int, seed: int) -> nn.Module:
    """The registered model ``name``, initialised from ``seed`` (torch's global RNG state is
    restored afterwards)."""
    from wrapgrad.registry import get_registry

    factory = get_registry().get("model", name, argument="model").factory
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return factory(in_channels=int(in_channels), num_classes=int(num_classes))


def convert(
    model: nn.Module, kind: str, sigma: float, seed: int, sde_options: Mapping[str, Any]
) -> Any:
    """``to_sde(model, ...)`` for ``kind`` (a copy: ``model`` is left as it was)."""
    import wrapgrad

    options = {**dict(sde_options), **KINDS[kind]}
    options.setdefault("sigma", sigma)
    if kind != "shaped":  # guide and outlier options mean nothing without shaping
        for key in ("guide_method", "guide_options", "guide_batch_size", "outlier_quantile"):
            options.pop(key, None)
    return wrapgrad.to_sde(model, seed=int(seed), **options)


def cache_dir() -> Path:
    """``$WRAPGRAD_CACHE``, else ``~/.cache/wrapgrad`` (the reference models' cache)."""
    return Path(os.environ.get("WRAPGRAD_CACHE") or Path.home() / ".cache" / "wrapgrad")


def _key(description: Mapping[str, Any]) -> str:
    blob = json.dumps({"version": CACHE_VERSION, **description}, sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@attrs.frozen(kw_only=True)
class KindRun:
    """One trained model of the comparison."""

    kind: str
    seed: int
    sde: Any
    """The trained :class:`~wrapgrad.sde.NeuralSDE`."""
    result: Any
    """Its :class:`~wrapgrad.sde.SDETrainResult`."""
    cached: bool
    """Loaded from the cache (the finished run resumed) rather than trained now."""


def train_kind(
    kind: str,
    init: nn.Module,
    data: tuple[Tensor, Tensor],
    *,
    seed: int,
    sigma: float,
    sde_options: Mapping[str, Any],
    train_options: Mapping[str, Any],
    description: Mapping[str, Any],
    cache: bool = True,
    progress: bool = False,
) -> KindRun:
    """Convert ``init`` for ``kind`` and train it with :func:`wrapgrad.sde.train_sde`.

    Args:
        description: what identifies the data and the initial model in the cache key (model
            and data-set names, split seed, item count); the kind, seed, sigma and options are
            added here.
        cache: keep the checkpoint under :func:`cache_dir` and resume a finished run from it.
    """
    from wrapgrad.sde import train_sde

    # channels_last: the convolutions of small_resnet train in 74-82% of the CPU time (one
    # thread; benchmarks/bench_sde.py --channels-last), and its plain copy is explained faster.
    sde = convert(init, kind, sigma, seed, sde_options).to(memory_format=torch.channels_last)
    options = dict(train_options)
    options.setdefault("seed", int(seed))
    cached = False
    if cache:
        key = _key(
            {
                **dict(description),
                "kind": kind,
                "seed": int(seed),
                "sigma": float(sigma),
                "sde": dict(sde_options),
                "train": options,
            }
        )
        folder = cache_dir() / "sde" / key
        cached = (folder / "checkpoint.pt").exists()
        options.update(checkpoint_dir=folder, resume=True)
    result = train_sde(sde, data, progress=progress, **options)
    cached = cached and result.train.resumed_from == len(result.train.history)
    return KindRun(kind=kind, seed=int(seed), sde=sde, result=result, cached=cached)
