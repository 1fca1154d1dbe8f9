"""``wrapgrad sde``: train one model of the paper's comparison with the iterative procedure.

Example::

    wrapgrad sde --kind shaped --out runs/shaped                  # embedded preset, seed 0
    wrapgrad sde --kind brownian --seed 1 --out runs/brownian1
    wrapgrad sde --kind shaped --preset paper --rounds 5 --out runs/paper --resume

Converts the registered model (initialised from ``--seed``) with :func:`wrapgrad.to_sde` for the
kind (``resnet``: σ = 0; ``brownian``; ``shaped``: attribution-shaped noise), trains it with
:func:`wrapgrad.sde.train_sde` and writes ``DIR/checkpoint.pt`` (the loop's checkpoint, with the
guide maps: ``--resume`` continues from it), ``DIR/model.pt`` (the trained network as the plain
architecture's state dict, loadable into the registered model) and ``DIR/summary.json``
(settings, rounds, history, test accuracy).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_sde_command"]


def _patience(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    from wrapgrad_sde.presets import preset

    settings: dict[str, Any] = {} if args.preset == "none" else preset(args.preset)
    for key in ("rounds", "epochs_per_round", "lr", "batch_size", "refresh_fraction"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.patience is not None:
        settings["patience"] = _patience(args.patience)
    return settings


def _run(args: argparse.Namespace) -> int:
    import torch

    from wrapgrad.cli import loop_options, training_data, write_summary
    from wrapgrad.files import atomic_write
    from wrapgrad.sde import train_sde
    from wrapgrad.training import accuracy
    from wrapgrad_sde.recipes import build_model, convert

    train_set, eval_data = training_data(args)
    model = build_model(args.model, train_set.inputs.shape[1], train_set.num_classes, args.seed)
    sde_options = {} if args.guide_method is None else {"guide_method": args.guide_method}
    sde = convert(model, args.kind, args.sigma, args.seed, sde_options)
    settings = _settings(args)
    out = Path(args.out)
    result = train_sde(sde, train_set.tensors(), **loop_options(args, eval_data), **settings)
    for r in result.rounds:
        print(
            f"round {r.round} (epoch {r.epoch}): loss {r.loss:.4f}"
            f"{'' if r.improved else ' (no improvement)'}; {r.train_seconds:.1f} s training, "
            f"{r.refresh_seconds:.1f} s refreshing {max(r.refreshed, 0)} maps"
        )
    plain = sde.to_plain().eval()
    test_accuracy = accuracy(plain, *eval_data)
    atomic_write(out / "model.pt", lambda tmp: torch.save(plain.state_dict(), tmp))
    summary = write_summary(
        args,
        eval_data,
        test_accuracy,
        result,
        kind=args.kind,
        sigma=sde.sigma,
        preset=args.preset,
        settings=settings,
    )
    print(
        f"{result.stopped}: test accuracy {test_accuracy:.4f} (noise off); model {out / 'model.pt'}; "
        f"summary {summary}"
    )
    return 0


def add_sde_command(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Add the ``sde`` command's arguments; return its action."""
    from wrapgrad.cli import add_source_arguments, add_training_arguments
    from wrapgrad_sde.recipes import KINDS

    add_source_arguments(parser, model="small_resnet", dataset="cmnist")
    parser.add_argument(
        "--kind", default="shaped", choices=sorted(KINDS), help="resnet (sigma 0), brownian, shaped"
    )
    parser.add_argument("--sigma", type=float, default=0.5, help="noise constant (the paper's 0.5)")
    parser.add_argument(
        "--preset",
        default="embedded",
        choices=["embedded", "paper", "none"],
        help="round and loop settings: embedded-data scale (default), the paper's, or none",
    )
    parser.add_argument("--rounds", type=int, help="at most this many rounds")
    parser.add_argument(
        "--epochs-per-round", dest="epochs_per_round", type=int, help="epochs a round"
    )
    parser.add_argument(
        "--patience", help="stop after this many rounds without improvement ('none': never)"
    )
    parser.add_argument(
        "--refresh-fraction", dest="refresh_fraction", type=float, help="maps refreshed a round"
    )
    parser.add_argument("--guide-method", dest="guide_method", help="explainer shaping the noise")
    add_training_arguments(parser)
    return _run
