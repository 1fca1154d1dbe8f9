"""Cost of ``wrap()`` without an enhancer against the direct Captum call, in the same run.

Model: a 19.7M-parameter MLP (3072 -> 4096 -> 1536 -> 512 -> 10, ReLU), batch 32, Saliency on CPU.
Printed: median wall time per call (round-robin rounds after a warm-up call each, as in
``bench_enhancers.py``, so load drifts hit every entry alike) of

* **captum**: ``captum.attr.Saliency(model).attribute(x, target=y)`` (inputs that require grad);
* **wrap (check)**: ``wrapgrad.wrap(model, "saliency")(x, target=y)`` with the default guard
  (identities, version counters, flags and hooks; no copy of the weights);
* **wrap (restore)**: the same with ``guard="restore"`` (a full value snapshot per call);
* **guard alone**: entering and leaving the default ``ModelGuard`` around nothing;

and the ratios to the Captum call. Target (issue 12): wrap (check) <= 1.1x captum.

Usage::

    python benchmarks/bench_guard.py            # ~1 min on 2 CPU cores
    python benchmarks/bench_guard.py --threads 1 --clock cpu   # on a shared machine
    python benchmarks/bench_guard.py --quick
"""

from __future__ import annotations

import argparse
import os

import torch
from bench_enhancers import add_clock_argument, clock_of, timeit_interleaved
from captum.attr import Saliency
from torch import nn

import wrapgrad
from wrapgrad.guard import ModelGuard


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(3072, 4096), nn.ReLU(),
        nn.Linear(4096, 1536), nn.ReLU(),
        nn.Linear(1536, 512), nn.ReLU(),
        nn.Linear(512, 10),
    ).eval()  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds")
    add_clock_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = mlp()
    n_params = sum(p.numel() for p in model.parameters())
    x = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.arange(32) % 10
    repeats = 5 if args.quick else args.repeats
    xg = x.detach().requires_grad_(True)
    sal = Saliency(model)
    check = wrapgrad.wrap(model, "saliency")
    restore = wrapgrad.wrap(model, "saliency", guard="restore")

    def guard_alone() -> None:
        with ModelGuard(model):
            pass

    rows = timeit_interleaved(
        {
            "captum": lambda: sal.attribute(xg, target=y),
            "wrap (check)": lambda: check(x, target=y),
            "wrap (restore)": lambda: restore(x, target=y),
            "guard alone": guard_alone,
        },
        repeats,
        torch.device("cpu"),
        clock_of(args),
    )
    base = rows["captum"]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"MLP, {n_params / 1e6:.1f}M parameters, batch 32, Saliency, {args.threads} threads, "
        f"{repeats} rounds, {args.clock} clock, load average {load}"
    )
    print(f"{'':<16}{'ms':>9}{'x captum':>10}")
    for name, t in rows.items():
        print(f"{name:<16}{1e3 * t:>9.2f}{t / base:>10.2f}")


if __name__ == "__main__":
    main()
