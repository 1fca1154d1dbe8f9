"""Pilot for the FAR Table 1 comparison at the embedded scale (issue 13): what each objective
reaches in a few minutes of CPU on the embedded MNIST digits with the small CNN.

Each robust objective fine-tunes the recipe-trained natural ``small_cnn`` (FAR fine-tunes the
natural model, Sec. A.2) with :func:`wrapgrad.train`; every model is then scored on the first
test digits:

* NA: natural accuracy (all 1,000 test digits);
* AA: accuracy under PGD (40 steps of ε/30 after a random start, l_inf ball ε);
* IN and CO: top-k intersection (k = 50) and Kendall's tau between the IG maps before and after
  IFIA (``wrapgrad.attack("ifia")``: top-k objective, 7 steps of 1.2 ε / 7, softplus β = 1, FAR
  Table 2) on ``wrapgrad.wrap(model, "integrated_gradients")``, with a 95% confidence interval
  over the attacked digits.

Usage::

    python benchmarks/pilot_robust_mnist.py                       # every objective, preset
    python benchmarks/pilot_robust_mnist.py --objective aat --epochs 2 --option aat:lam=1.0
    python benchmarks/pilot_robust_mnist.py --epsilon 0.3 --option epsilon=0.3   # every objective
    python benchmarks/pilot_robust_mnist.py --quick               # a minute, for a smoke check
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import time
from typing import Any

import torch
import torch.nn.functional as F

import wrapgrad
from wrapgrad.adversarial import pgd
from wrapgrad.training import accuracy

OBJECTIVES = ("natural", "pgd", "ig_norm", "ig_sum_norm", "aat", "adv_aat")


def mean_ci(values: torch.Tensor) -> tuple[float, float]:
    """Mean and the half-width of a normal 95% interval."""
    v = values.to(torch.float64)
    v = v[~torch.isnan(v)]
    if len(v) < 2:
        return float(v.mean()) if len(v) else float("nan"), float("nan")
    return float(v.mean()), 1.96 * float(v.std()) / math.sqrt(len(v))


def pgd_accuracy(model: Any, x: torch.Tensor, y: torch.Tensor, epsilon: float) -> float:
    model.eval()
    x_adv = pgd(
        lambda z: F.cross_entropy(model(z), y, reduction="none"),
        x,
        epsilon=epsilon,
        step_size=epsilon / 30,
        steps=40,
        bounds=(0.0, 1.0),
        random_start=True,
        generator=torch.Generator().manual_seed(0),
    )
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


def ifia_scores(
    model: Any, x: torch.Tensor, y: torch.Tensor, epsilon: float, ig_steps: int
) -> dict:
    model.eval()
    explain = wrapgrad.wrap(model, "integrated_gradients", n_steps=ig_steps)
    attack = wrapgrad.attack(
        "ifia", epsilon=epsilon, steps=7, k=50, beta=1.0, bounds=(0.0, 1.0), seed=0, progress=False
    )
    result = attack(model, x, y, explain)
    return {
        "IN": mean_ci(result.metrics["topk_intersection"]),
        "CO": mean_ci(result.metrics["kendall_tau"]),
    }


def run(objective: str, args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    from wrapgrad_robust.presets import preset  # the plugin's presets (a script may import it)

    torch.manual_seed(0)
    model = wrapgrad.pretrained("small_cnn", "mnist", seed=args.seed)
    train_x, train_y = wrapgrad.load_dataset("mnist", split="train").tensors()
    test_x, test_y = wrapgrad.load_dataset("mnist", split="test").tensors()
    start = time.perf_counter()
    settings: dict[str, Any] = {}
    if objective != "natural":
        mine = {k.split(":", 1)[-1]: v for k, v in options.items() if ":" not in k}
        mine.update(
            {k.split(":", 1)[1]: v for k, v in options.items() if k.startswith(objective + ":")}
        )
        settings = {**preset(objective, "embedded"), **mine}
        if args.epochs is not None:
            settings["epochs"] = args.epochs
        if args.limit:
            train_x, train_y = train_x[: args.limit], train_y[: args.limit]
        wrapgrad.train(
            model, (train_x, train_y), objective, seed=args.seed, progress=args.progress, **settings
        )
    seconds = time.perf_counter() - start
    n = args.samples
    row = {
        "objective": objective,
        "settings": settings,
        "train_seconds": seconds,
        "NA": accuracy(model, test_x, test_y),
        "AA": pgd_accuracy(model, test_x[: 4 * n], test_y[: 4 * n], args.epsilon),
        **ifia_scores(model, test_x[:n], test_y[:n], args.epsilon, args.ig_steps),
    }
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--objective", action="append", choices=OBJECTIVES)
    p.add_argument("--epochs", type=int)
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="[OBJECTIVE:]KEY=VALUE",
        help="a training option for every robust objective, or for one (aat:lam=1.0)",
    )
    p.add_argument("--epsilon", type=float, default=0.1, help="evaluation budget")
    p.add_argument("--samples", type=int, default=100, help="digits attacked by IFIA")
    p.add_argument("--ig-steps", dest="ig_steps", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int)
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: robust to a busy core)"
    )
    p.add_argument("--progress", action="store_true")
    p.add_argument("--quick", action="store_true", help="500 training digits, 1 epoch, 20 attacked")
    p.add_argument("--json", help="append the rows to this JSON-lines file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.limit, args.epochs, args.samples = 500, 1, 20
    options = {}
    for item in args.option:
        key, _, raw = item.partition("=")
        try:
            options[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            options[key] = raw
    print(f"{'objective':<12} {'train s':>8} {'NA':>6} {'AA':>6} {'IN':>14} {'CO':>14}")
    for objective in args.objective or OBJECTIVES:
        row = run(objective, args, options)
        (i, di), (c, dc) = row["IN"], row["CO"]
        print(
            f"{objective:<12} {row['train_seconds']:8.0f} {row['NA']:6.3f} {row['AA']:6.3f} "
            f"{i:7.3f}±{di:.3f} {c:7.3f}±{dc:.3f}  {row['settings']}",
            flush=True,
        )
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
