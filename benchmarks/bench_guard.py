"""Cost of ``wrap()`` without an enhancer against the direct Captum call, in the same run.

Model: a 19.7M-parameter MLP (3072 -> 4096 -> 1536 -> 512 -> 10, ReLU), batch 32, Saliency on CPU.
Printed: median wall time per call of

* **captum**: ``captum.attr.Saliency(model).attribute(x, target=y)`` (inputs that require grad);
* **wrap (check)**: ``wrapgrad.wrap(model, "saliency")(x, target=y)`` with the default guard
  (identities, version counters, flags and hooks; no copy of the weights);
* **wrap (restore)**: the same with ``guard="restore"`` (a full value snapshot per call);
* **guard alone**: entering and leaving the default ``ModelGuard`` around nothing;

and the ratios to the Captum call. Target (issue 12): wrap (check) <= 1.1x captum.

Usage::

    python benchmarks/bench_guard.py            # ~1 min on 2 CPU cores
    python benchmarks/bench_guard.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
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


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = mlp()
    n_params = sum(p.numel() for p in model.parameters())
    x = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.arange(32) % 10
    repeats = 5 if args.quick else 30
    xg = x.detach().requires_grad_(True)
    sal = Saliency(model)
    check = wrapgrad.wrap(model, "saliency")
    restore = wrapgrad.wrap(model, "saliency", guard="restore")

    def guard_alone() -> None:
        with ModelGuard(model):
            pass

    rows = {
        "captum": median_time(lambda: sal.attribute(xg, target=y), repeats),
        "wrap (check)": median_time(lambda: check(x, target=y), repeats),
        "wrap (restore)": median_time(lambda: restore(x, target=y), repeats),
        "guard alone": median_time(guard_alone, repeats),
    }
    base = rows["captum"]
    print(f"MLP, {n_params / 1e6:.1f}M parameters, batch 32, Saliency, {args.threads} threads")
    print(f"{'':<16}{'ms':>9}{'x captum':>10}")
    for name, t in rows.items():
        print(f"{name:<16}{1e3 * t:>9.2f}{t / base:>10.2f}")


if __name__ == "__main__":
    main()
