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
import json
from collections.abc import Callable
from pathlib import Path
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
    import torch

    from wrapgrad.catalog import pretrained, train_and_test
    from wrapgrad.training import accuracy, train
    from wrapgrad_robust.presets import preset

    if args.threads:
        torch.set_num_threads(args.threads)
    train_set, eval_data = train_and_test(
        args.dataset, limit=args.limit, test_samples=args.eval_samples
    )
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
    out = Path(args.out)
    result = train(
        model,
        train_set.tensors(),
        args.objective,
        seed=args.seed,
        device=args.device,
        checkpoint_dir=out,
        resume=args.resume,
        progress=not args.quiet,
        eval_data=eval_data,
        **settings,
    )
    test_accuracy = accuracy(result.model, *eval_data)
    for r in result.history:
        parts = ", ".join(f"{k} {v:.4f}" for k, v in sorted(r.metrics.items()))
        print(f"epoch {r.epoch}: {parts}; test accuracy {r.eval_accuracy:.4f} ({r.seconds:.1f} s)")
    summary = {
        "model": args.model,
        "dataset": args.dataset,
        "objective": result.objective,
        "init": init,
        "preset": args.preset,
        "settings": settings,
        "seed": args.seed,
        "test_samples": len(eval_data[1]),
        "test_accuracy": test_accuracy,
        "torch": torch.__version__,
        "result": result.to_dict(),
    }
    from wrapgrad.files import atomic_write

    atomic_write(out / "summary.json", json.dumps(summary, indent=2, default=repr))
    print(
        f"test accuracy {test_accuracy:.4f}; checkpoint {result.checkpoint}; summary {out / 'summary.json'}"
    )
    return 0


def add_train_command(subparsers: Any) -> Callable[[argparse.Namespace], int]:
    """Add the ``train`` sub-parser; return its action."""
    p = subparsers.add_parser(
        "train",
        help="train a registered model with a training objective (natural, pgd, aat, ...)",
        description="Train a registered model on a registered data set with a registered "
        "objective (wrapgrad.train), showing progress; write DIR/checkpoint.pt and "
        "DIR/summary.json.",
    )
    p.add_argument("--model", default="small_cnn", help="registered model (small_cnn, ...)")
    p.add_argument("--dataset", default="mnist", help="registered data set (mnist, ...)")
    p.add_argument(
        "--objective",
        default="adv_aat",
        help="natural, pgd, ig_norm, ig_sum_norm, aat, adv_aat, ...",
    )
    p.add_argument("--out", required=True, help="output folder (checkpoint and summary)")
    p.add_argument(
        "--preset",
        default="embedded",
        choices=["embedded", "paper", "none"],
        help="objective and loop settings: embedded-data scale (default), the papers', or none",
    )
    p.add_argument(
        "--init",
        default="auto",
        choices=["auto", "scratch", "pretrained"],
        help="start from a fresh model, or fine-tune the recipe-trained one (FAR fine-tunes); "
        "auto: fine-tune for a robust objective where the model has a recipe",
    )
    p.add_argument("--epochs", type=int, help="epochs (overrides the preset)")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="batch size")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--optimizer", help="adam, adamw or sgd")
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="an objective or loop option, e.g. --option lam=0.5 (repeatable)",
    )
    p.add_argument("--seed", type=int, default=0, help="initialisation and training seed")
    p.add_argument("--device", help="cpu, cuda, ... (default: cpu)")
    p.add_argument("--limit", type=int, help="train on the first N training items only")
    p.add_argument(
        "--threads", type=int, help="torch intra-op threads (1 is faster on a busy small machine)"
    )
    p.add_argument(
        "--eval-samples", dest="eval_samples", type=int, default=1000, help="test samples"
    )
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return _run
