"""Training recipes for the reference models.

A :class:`Recipe` pins everything that determines the trained weights except the seed (model,
data set, epochs, optimiser settings, data-set options); its :meth:`Recipe.key` is a hash of
all of it, under which :mod:`wrapgrad_data.cache` stores the weights. :func:`train` runs a recipe
on wrapgrad's one training loop (:func:`wrapgrad.train`, objective ``natural``): AdamW, the
one-cycle schedule, seeded without touching global state (the initialisation runs under
:func:`torch.random.fork_rng`, the loop has its own generators).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from wrapgrad.checks import check_bool
from wrapgrad.errors import WrapgradValueError

__all__ = ["RECIPES", "Recipe", "TrainingResult", "accuracy", "get_recipe", "train"]

#: Bump when the training loop changes in a way that changes the weights (invalidates caches).
#: Still 1 on wrapgrad.train: its natural objective gives the old loop's weights bit for bit.
LOOP_VERSION = 1


@attrs.frozen(kw_only=True)
class Recipe:
    """How to train one reference model on one data set (everything but the seed)."""

    model: str
    """Registered model name (``small_cnn``, ``small_resnet``)."""
    dataset: str
    """Registered data-set name (``mnist``, ``cmnist``, ``digits8x8``)."""
    epochs: int = 8
    batch_size: int = 64
    lr: float = 3e-3
    """Peak learning rate of the one-cycle schedule (AdamW)."""
    weight_decay: float = 1e-4
    data_seed: int = 0
    """Seed of the data set's train/test split (fixed, so every seed is tested on the same set)."""
    dataset_options: tuple[tuple[str, Any], ...] = ()
    """Extra keyword arguments of the data-set factory for the training split (e.g. copies)."""
    model_options: tuple[tuple[str, Any], ...] = ()
    """Extra keyword arguments of the model factory."""
    channels_last: bool = attrs.field(
        default=False, validator=lambda _, a, value: check_bool(value, a.name)
    )
    """Train in the ``channels_last`` memory format: the same model and loop, other float
    rounding in the convolutions, so other weights; on CPU a step of ``small_resnet`` on 3x32x32
    images takes about 0.8x the time (two threads). The trained model comes back in the default
    (contiguous) format, as the cache gives it back. Off in the built-in recipes (their cache keys
    stay); the demo sets it. The trained model differs by about as much as another seed does
    (``docs/data.md``)."""

    def key(self) -> str:
        """A hash of the recipe and the loop version: the cache key of the trained weights
        (``channels_last`` counts only when set, so the keys of the other recipes are those
        from before the field existed)."""
        fields = attrs.asdict(self)
        if not self.channels_last:
            del fields["channels_last"]
        blob = json.dumps({"loop": LOOP_VERSION, **fields}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


RECIPES: dict[tuple[str, str], Recipe] = {
    ("small_cnn", "mnist"): Recipe(model="small_cnn", dataset="mnist", epochs=12, lr=5e-3),
    ("small_resnet", "mnist"): Recipe(model="small_resnet", dataset="mnist", epochs=6),
    ("small_cnn", "digits8x8"): Recipe(model="small_cnn", dataset="digits8x8", epochs=15),
    ("small_resnet", "digits8x8"): Recipe(model="small_resnet", dataset="digits8x8", epochs=10),
    ("small_cnn", "cmnist"): Recipe(model="small_cnn", dataset="cmnist", epochs=10),
    ("small_resnet", "cmnist"): Recipe(
        model="small_resnet", dataset="cmnist", epochs=10, dataset_options=(("copies", 2),)
    ),
}


def get_recipe(model_name: str, dataset_name: str, **overrides: Any) -> Recipe:
    """The recipe for ``(model_name, dataset_name)`` (a default one for other pairs), with
    ``overrides`` (any :class:`Recipe` field) applied."""
    base = RECIPES.get((model_name, dataset_name), Recipe(model=model_name, dataset=dataset_name))
    fields = {f.name for f in attrs.fields(Recipe)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise WrapgradValueError(
            f"{bad[0]}: not a recipe option; expected one of {sorted(fields - {'model', 'dataset'})}"
        )
    for k in ("dataset_options", "model_options"):
        if isinstance(overrides.get(k), dict):
            overrides[k] = tuple(sorted(overrides[k].items()))
    return attrs.evolve(base, **overrides)


@attrs.frozen(kw_only=True)
class TrainingResult:
    """A trained model and how it did."""

    model: nn.Module
    """The trained model, in eval mode."""
    recipe: Recipe
    seed: int
    test_accuracy: float
    """Accuracy on the data set's test split."""
    seconds: float
    """Wall-clock training time."""


def accuracy(model: nn.Module, inputs: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on ``(inputs, labels)``, without gradients."""
    from wrapgrad.training import accuracy as loop_accuracy

    return loop_accuracy(model, inputs, labels, batch_size)


def _build(recipe: Recipe, split: str, **extra: Any) -> Any:
    from wrapgrad.registry import get_registry

    factory = get_registry().get("dataset", recipe.dataset).factory
    return factory(split=split, seed=recipe.data_seed, **extra)


def build_model(recipe: Recipe, in_channels: int, num_classes: int) -> nn.Module:
    """An untrained model for ``recipe`` (through the registry)."""
    from wrapgrad.registry import get_registry

    factory = get_registry().get("model", recipe.model).factory
    return factory(in_channels=in_channels, num_classes=num_classes, **dict(recipe.model_options))


def train(
    model_name: str,
    dataset_name: str,
    seed: int = 0,
    *,
    epochs: int | None = None,
    limit: int | None = None,
    progress: bool = True,
    **overrides: Any,
) -> TrainingResult:
    """Train a reference model with its recipe (AdamW, one-cycle learning rate, cross-entropy)
    on wrapgrad's one training loop (:func:`wrapgrad.train` with the ``natural`` objective).

    Args:
        model_name: a registered model (``small_cnn``, ``small_resnet``).
        dataset_name: a registered data set (``mnist``, ``cmnist``, ``digits8x8``).
        seed: seeds the initialisation (``seed``) and the loop (``seed + 1``: shuffling), so the
            same seed gives the same weights on one machine.
        epochs: overrides the recipe's number of epochs.
        limit: train on only the first ``limit`` training items (quick runs, tests).
        progress: show a tqdm progress bar.
        **overrides: other :class:`Recipe` fields.

    Returns:
        A :class:`TrainingResult` with the model (eval mode) and its test accuracy.
    """
    from wrapgrad.training import train as train_loop

    if epochs is not None:
        overrides["epochs"] = epochs
    if limit is not None:
        overrides["dataset_options"] = tuple(
            sorted({**dict(overrides.get("dataset_options", ())), "limit": limit}.items())
        )
    recipe = get_recipe(model_name, dataset_name, **overrides)
    if recipe.epochs < 1:
        raise WrapgradValueError(f"epochs: expected a positive int, got {recipe.epochs!r}")
    train_set = _build(recipe, "train", **dict(recipe.dataset_options))
    test_set = _build(recipe, "test")
    x, y = train_set.inputs, train_set.labels
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = build_model(recipe, in_channels=x.shape[1], num_classes=train_set.num_classes)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_loop(
        model,
        (x, y),
        "natural",
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        optimizer="adamw",
        weight_decay=recipe.weight_decay,
        scheduler="one_cycle",
        seed=int(seed) + 1,
        progress=progress,
    )
    if recipe.channels_last:
        model = model.to(memory_format=torch.contiguous_format)
    model.eval()
    seconds = time.perf_counter() - start
    acc = accuracy(model, test_set.inputs, test_set.labels)
    return TrainingResult(
        model=model, recipe=recipe, seed=int(seed), test_accuracy=acc, seconds=seconds
    )
