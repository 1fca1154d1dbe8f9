"""``wrapgrad calibrate``: calibrate a reference model's noise level and plot the accuracy curve.

Example::

    wrapgrad calibrate --model small_resnet --dataset cmnist --perturber weight \\
        --target-drop 0.05 --out curve.png
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wrapgrad.calibration import CalibrationResult

__all__ = ["add_calibrate_command", "plot_curve"]


def plot_curve(result: CalibrationResult, path: str | Path) -> Path:
    """Save the accuracy-vs-level curve (and the calibrated level) as a PNG (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    curves = result.components or (result,)
    for part in curves:
        label = "noise_level (input)" if part.perturber == "input" else "sigma"
        ax.plot(part.levels, part.accuracies, "o-", label=f"{part.perturber}: ACC vs {label}")
    target_acc = result.acc_clean - result.target_drop * (result.acc_clean - result.acc_chance)
    ax.axhline(target_acc, color="grey", ls="--", lw=1, label=f"target drop {result.target_drop:g}")
    ax.axhline(result.acc_chance, color="grey", ls=":", lw=1, label="chance")
    if not result.components:
        ax.axvline(result.level, color="C3", lw=1, label=f"calibrated {result.level:.4g}")
    ax.set_xlabel("noise level")
    ax.set_ylabel("accuracy (mean over draws)")
    ax.set_title(f"{result.calibrator}: drop {result.drop:.3f} at {result.level:.4g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def _run(args: argparse.Namespace) -> int:
    from wrapgrad.calibration import calibrate
    from wrapgrad.catalog import load_dataset, pretrained

    model = pretrained(args.model, args.dataset, seed=args.seed, progress=not args.quiet)
    test = load_dataset(args.dataset, split="test")
    options: dict[str, Any] = {
        "draws": args.draws,
        "seed": args.seed,
        "max_samples": args.samples,
        "progress": not args.quiet,
    }
    if args.out and args.calibrator == "accuracy_drop":
        options["curve_points"] = args.curve_points
    result = calibrate(
        model,
        test.tensors(),
        perturber=args.perturber,
        target_drop=args.target_drop,
        calibrator=args.calibrator,
        **options,
    )
    print(result)
    if args.out:
        print(f"curve saved to {plot_curve(result, args.out)}")
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=2))
        print(f"record saved to {args.json}")
    return 0


def add_calibrate_command(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Add the ``calibrate`` command's arguments; return its action."""
    from wrapgrad.cli import add_source_arguments

    add_source_arguments(parser, model="small_cnn", dataset="mnist")
    parser.add_argument("--perturber", default="weight", choices=["weight", "input"])
    parser.add_argument(
        "--calibrator", default="accuracy_drop", help="accuracy_drop, halve, noisegrad++"
    )
    parser.add_argument(
        "--target-drop", type=float, default=0.05, help="relative accuracy drop (0, 1)"
    )
    parser.add_argument("--draws", type=int, default=8, help="noise draws per level")
    parser.add_argument("--samples", type=int, default=1000, help="held-out samples")
    parser.add_argument("--seed", type=int, default=0, help="training and noise seed")
    parser.add_argument("--curve-points", type=int, default=6, help="extra levels for the plot")
    parser.add_argument("--out", help="save the accuracy curve as this PNG")
    parser.add_argument("--json", help="save the record as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return _run
