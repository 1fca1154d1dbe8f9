"""``wrapgrad train``: train a registered model on a registered data set with an objective.

Example::

    wrapgrad train --model small_cnn --dataset mnist --objective adv_aat --epochs 3 --out runs/advaat
    wrapgrad train --objective aat --option lam=1.0 --option k=30 --out runs/aat
    wrapgrad train --objective natural --init scratch --preset none --epochs 5 --out runs/nat

Writes ``DIR/checkpoint.pt`` (the loop's checkpoint: weights, optimiser, generators, history;
``--resume`` continues from it) and ``DIR/summary.json`` (the command's settings, the history and
the test accuracy). Models and data sets come from the registry (:mod:`wrapgrad.catalog`).
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Callable
from typing import Any

__all__ = ["add_train_command", "build_model", "parse_options"]


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """``["lam=0.5", "bounds=(0, 1)", "ig_method=riemann_right"]`` -> a dict (values read as
    Python literals where they are, else kept as strings)."""
    from wrapgrad.errors import WrapgradValueError

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise WrapgradValueError(f"--option: expected KEY=VALUE, got {item!r}")
        try:
            value: Any = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip()
        if raw.strip().lower() == "none":
            value = None
        out[key.strip()] = value
    return out


def build_model(name: str, dataset: Any, seed: int) -> Any:
    """An untrained registered model for ``dataset``'s input channels and classes, initialised
    from ``seed`` (global RNG state restored)."""
    import torch

    from wrapgrad.options import accepted
    from wrapgrad.registry import get_registry

    factory = get_registry().get("model", name, argument="--model").factory
    names, open_ = accepted(factory)
    kwargs: dict[str, Any] = {}
    if open_ or "in_channels" in names:
        kwargs["in_channels"] = int(dataset.inputs.shape[1])
    if open_ or "num_classes" in names:
        kwargs["num_classes"] = int(dataset.num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return factory(**kwargs)


def _run(args: argparse.Namespace) -> int:
    from wrapgrad.catalog import pretrained
    from wrapgrad.cli import loop_options, training_data, write_summary
    from wrapgrad.training import accuracy, train
    from wrapgrad_robust.presets import preset

    train_set, eval_data = training_data(args)
    init = args.init
    if init == "auto":  # the robust presets fine-tune the natural model, as FAR does
        from wrapgrad.registry import get_registry

        spec = get_registry().get("model", args.model, argument="--model")
        robust = get_registry().get("objective", args.objective, argument="--objective").name
        init = "pretrained" if robust != "natural" and spec.pretrained is not None else "scratch"
    if init == "pretrained":
        model = pretrained(args.model, args.dataset, seed=args.seed, progress=not args.quiet)
    else:
        model = build_model(args.model, train_set, args.seed)
    settings: dict[str, Any] = {} if args.preset == "none" else preset(args.objective, args.preset)
    for key in ("epochs", "batch_size", "lr", "optimizer"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    settings.update(parse_options(args.option))
    result = train(
        model, train_set.tensors(), args.objective, **loop_options(args, eval_data), **settings
    )
    test_accuracy = accuracy(result.model, *eval_data)
    for r in result.history:
        parts = ", ".join(f"{k} {v:.4f}" for k, v in sorted(r.metrics.items()))
        print(f"epoch {r.epoch}: {parts}; test accuracy {r.eval_accuracy:.4f} ({r.seconds:.1f} s)")
    summary = write_summary(
        args,
        eval_data,
        test_accuracy,
        result,
        objective=result.objective,
        init=init,
        preset=args.preset,
        settings=settings,
    )
    print(f"test accuracy {test_accuracy:.4f}; checkpoint {result.checkpoint}; summary {summary}")
    return 0


def add_train_command(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Add the ``train`` command's arguments; return its action."""
    from wrapgrad.cli import add_source_arguments, add_training_arguments

    add_source_arguments(parser, model="small_cnn", dataset="mnist")
    parser.add_argument(
        "--objective",
        default="adv_aat",
        help="natural, pgd, ig_norm, ig_sum_norm, aat, adv_aat, ...",
    )
    parser.add_argument(
        "--preset",
        default="embedded",
        choices=["embedded", "paper", "none"],
        help="objective and loop settings: embedded-data scale (default), the papers', or none",
    )
    parser.add_argument(
        "--init",
        default="auto",
        choices=["auto", "scratch", "pretrained"],
        help="start from a fresh model, or fine-tune the recipe-trained one (FAR fine-tunes); "
        "auto: fine-tune for a robust objective where the model has a recipe",
    )
    parser.add_argument("--epochs", type=int, help="epochs (overrides the preset)")
    parser.add_argument("--optimizer", help="adam, adamw or sgd")
    parser.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="an objective or loop option, e.g. --option lam=0.5 (repeatable)",
    )
    add_training_arguments(parser)
    return _run
