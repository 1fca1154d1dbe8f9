"""Data sets and reference models by name, through the current registry.

These are the entry points to the ``wrapgrad_datasets`` and ``wrapgrad_models`` hooks: the core,
the CLI, pipelines and other plugins reach a data set or a recipe-trained reference model only
here, so no plugin imports another.

``wrapgrad.pretrained("small_cnn", "mnist", seed=0)`` trains a reference model with its recipe
once, then loads it from the cache.

>>> test = load_dataset("digits8x8", split="test", limit=4)
>>> len(test), tuple(test[0][0].shape)
(4, (1, 8, 8))
>>> load_dataset("digits")
Traceback (most recent call last):
...
wrapgrad.errors.UnknownNameError: dataset: unknown dataset 'digits'; did you mean 'digits8x8'?
"""

from __future__ import annotations

from typing import Any

from torch import nn

from wrapgrad.errors import WrapgradValueError
from wrapgrad.registry import Registry, get_registry, use_registry

__all__ = ["load_dataset", "pretrained", "recipe", "train_and_test"]


def load_dataset(
    name: str,
    split: str = "train",
    seed: int = 0,
    *,
    registry: Registry | None = None,
    **options: Any,
) -> Any:
    """The registered data set ``name`` (``"mnist"``, ``"digits8x8"``, ``"cmnist"``, ...):
    ``factory(split=split, seed=seed, **options)``, a
    :class:`~wrapgrad.protocols.LabelledDataset` (``.inputs``, ``.labels``, ``.masks``,
    ``.num_classes``, ``.name``, ``.tensors()``)."""
    with use_registry(registry):
        spec = get_registry().get("dataset", name, argument="dataset")
        return spec.factory(split=split, seed=seed, **options)


def train_and_test(
    name: str,
    *,
    limit: int | None = None,
    test_samples: int,
    registry: Registry | None = None,
) -> tuple[Any, tuple[Any, Any]]:
    """What a training command loads: the train split of data set ``name`` (its first ``limit``
    items, through the data set's ``limit`` option, when given) and ``(inputs, labels)`` of the
    first ``test_samples`` items of its test split (all of them if it has fewer)."""
    options = {} if limit is None else {"limit": limit}
    train_set = load_dataset(name, split="train", registry=registry, **options)
    test_set = load_dataset(name, split="test", registry=registry)
    n = min(test_samples, len(test_set))
    return train_set, (test_set.inputs[:n], test_set.labels[:n])


def _model_spec(model: str, what: str) -> Any:
    spec = get_registry().get("model", model, argument="model")
    if getattr(spec, what) is None:
        raise WrapgradValueError(
            f"model: {spec.name!r} has no training recipes (its plugin gives no {what}); "
            f"train it yourself, e.g. with wrapgrad.train"
        )
    return spec


def recipe(model: str, dataset: str, *, registry: Registry | None = None, **overrides: Any) -> Any:
    """The training recipe of reference model ``model`` on ``dataset`` with ``overrides``
    applied (validated: a bad override raises an error naming it)."""
    with use_registry(registry):
        return _model_spec(model, "recipe").recipe(dataset, **overrides)


def pretrained(
    model: str,
    dataset: str,
    seed: int = 0,
    *,
    progress: bool = False,
    registry: Registry | None = None,
    **overrides: Any,
) -> nn.Module:
    """Reference model ``model`` trained on ``dataset`` with its recipe (and ``overrides``),
    from the weight cache or trained now and cached; in eval mode.

    Args:
        model: a registered model with recipes (``"small_cnn"``, ``"small_resnet"``).
        dataset: a registered data set (``"mnist"``, ``"cmnist"``, ``"digits8x8"``).
        seed: the training seed (each seed is its own cache entry).
        progress: show a progress bar while training.
        registry: the registry to resolve names in (default: the current one).
        **overrides: recipe fields (``epochs``, ``lr``, ``dataset_options``, ...).
    """
    with use_registry(registry):
        spec = _model_spec(model, "pretrained")
        return spec.pretrained(dataset, seed=seed, progress=progress, **overrides)
