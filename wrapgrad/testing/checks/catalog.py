"""Checks of data sets, reference models, command-line subcommands and pipeline steps."""

from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn

from wrapgrad.protocols import LabelledDataset
from wrapgrad.records import DatasetSpec
from wrapgrad.testing.checks._base import check, identical, require
from wrapgrad.testing.components import Component

#: The data attributes of the protocol (what pipelines, training and calibration read).
_DATASET_ATTRIBUTES = tuple(LabelledDataset.__annotations__)


def _load(component: Component, split: str, seed: int = 0) -> object:
    options = {k: v for k, v in component.build_options().items() if k not in ("split", "seed")}
    return component.spec.factory(split=split, seed=seed, **options)


@check("dataset")
def check_dataset_items(component: Component) -> None:
    """Both splits load, each a :class:`~wrapgrad.protocols.LabelledDataset` (``inputs``,
    ``labels``, ``masks``, ``num_classes`` as declared, ``name``, ``tensors()``); items are
    ``(input, label, ...)`` with inputs of the declared ``input_shape`` (floating point) and
    labels in ``[0, num_classes)``; the declared masks are there, boolean, one per input;
    ``tensors()`` holds the same items."""
    spec = component.spec
    require(isinstance(spec, DatasetSpec), "not a DatasetSpec")
    for split in ("train", "test"):
        data = _load(component, split)
        missing = [a for a in _DATASET_ATTRIBUTES if not hasattr(data, a)]
        missing += [] if callable(getattr(data, "tensors", None)) else ["tensors()"]
        require(
            not missing,
            f"split {split!r}: a {type(data).__name__} has no {', '.join(missing)} (a data set "
            f"is a wrapgrad.protocols.LabelledDataset, e.g. a wrapgrad.datasets.InMemoryDataset)",
        )
        if spec.num_classes is not None:
            require(
                data.num_classes == spec.num_classes,  # type: ignore[attr-defined]
                f"num_classes is {data.num_classes}, declared {spec.num_classes}",  # type: ignore[attr-defined]
            )
        n = len(data)  # type: ignore[arg-type]
        require(n > 0, f"split {split!r} is empty")
        for index in sorted({0, n - 1}):
            item = data[index]  # type: ignore[index]
            require(
                isinstance(item, (tuple, list)) and len(item) >= 2,
                f"item {index} is not (input, label, ...)",
            )
            x, y = item[0], item[1]
            require(
                isinstance(x, Tensor) and x.is_floating_point(),
                f"item {index}: the input is not a floating-point tensor",
            )
            if spec.input_shape is not None:
                require(
                    tuple(x.shape) == tuple(spec.input_shape),
                    f"item {index}: input shape {tuple(x.shape)}, declared {spec.input_shape}",
                )
            label, classes = int(y), data.num_classes  # type: ignore[attr-defined]
            require(0 <= label < classes, f"item {index}: label {label} outside [0, {classes})")
        masks = data.masks  # type: ignore[attr-defined]
        for name in spec.masks:
            require(name in masks, f"declared mask {name!r} is missing (has {sorted(masks)})")
            m = masks[name]
            require(
                m.dtype == torch.bool and m.shape[0] == n,
                f"mask {name!r}: expected a bool tensor with {n} rows, got {m.dtype} {tuple(m.shape)}",
            )
        require(not spec.has_masks or masks, "has_masks is declared but the data set has no masks")
        inputs, labels = data.tensors()  # type: ignore[attr-defined]
        require(len(inputs) == n and len(labels) == n, "tensors() disagrees with len()")
        identical(inputs[0], data[0][0], "tensors()[0][0] against data[0][0]")  # type: ignore[index]


@check("dataset")
def check_dataset_seed(component: Component) -> None:
    """The same split and seed give the same items (nothing is downloaded or drawn anew)."""
    first, again = _load(component, "test", 0), _load(component, "test", 0)
    require(len(first) == len(again), "two loads with the same seed differ in length")  # type: ignore[arg-type]
    for index in sorted({0, len(first) - 1}):  # type: ignore[arg-type]
        identical(again[index][0], first[index][0], f"item {index} of two loads")  # type: ignore[index]


@check("model")
def check_model_reproducible(component: Component) -> None:
    """The factory builds an untrained ``nn.Module`` with finite parameters, the same under the
    same global seed."""

    def build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return component.build()

    first, second = build(), build()
    params = dict(first.named_parameters())
    require(params, "the model has no parameters")
    require(all(bool(torch.isfinite(p).all()) for p in params.values()), "non-finite parameters")
    state = second.state_dict()
    for name, value in first.state_dict().items():
        identical(state[name], value, f"{name} of two builds under the same seed")


@check("command")
def check_command_parser(component: Component) -> None:
    """``factory(parser)`` adds the command's arguments to the parser it is handed
    (:func:`wrapgrad.cli.add_command`; not a sub-parser of its own, as before hook API 1.2) and
    returns the action, a callable; the sub-parser's ``--help`` renders."""
    import warnings

    from wrapgrad.cli import add_command

    parser = argparse.ArgumentParser(prog="wrapgrad")
    subparsers = parser.add_subparsers(dest="command")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)
        action = add_command(subparsers, component.spec)  # type: ignore[arg-type]
    require(
        not any("add_parser" in str(w.message) for w in caught),
        "the factory adds its own sub-parser (hook API 1.0-1.1); since 1.2 it is handed its "
        "parser: add the arguments to it, and put the help texts in the spec's summary and "
        "description",
    )
    require(callable(action), f"the factory returned {type(action).__name__}, not an action")
    subparsers.choices[component.name].format_help()
