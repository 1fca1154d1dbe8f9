"""Cost of an enhancer around a method that draws its own random numbers, in the same run.

Since the engine seeds each Monte-Carlo sample's own draws (``docs/enhancers.md``, "Methods that
draw random numbers themselves"), SmoothGrad and NoiseGrad of GradientShap or KernelShap run one
sample per call instead of batching the samples, so that the maps do not depend on ``max_batch``
or ``strategy``. This measures what that costs, SmoothGrad with ``N`` samples, batch ``B``, on
``bench_enhancers``' ``cnn`` (1x28x28, conv 32 and 64, 128 hidden units), against:

* **NoiseTunnel**: Captum's SmoothGrad of the method, all ``N`` noisy copies in one batched call
  (its draws depend on the batch: the behaviour wrapgrad gave up);
* **loop**: ``N`` Captum calls of the method on ``x + noise``, one per sample (the per-sample
  procedure itself, without wrapgrad: seeding, guard, validation and reduction are the
  difference).

Printed: median wall time per call (round-robin rounds after a warm-up call each) and the ratios
of ``wrap`` to both.

Usage::

    python benchmarks/bench_stochastic.py            # ~2 min on 2 CPU cores
    python benchmarks/bench_stochastic.py --threads 1 --clock cpu   # on a shared machine
    python benchmarks/bench_stochastic.py --quick
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
from bench_enhancers import SmallCNN, add_clock_argument, clock_of, timeit_interleaved
from captum.attr import GradientShap, KernelShap, NoiseTunnel

import wrapgrad

SIGMA = 0.1  # input-noise standard deviation (absolute: the inputs lie in [0, 1])


def _method(name: str, model: torch.nn.Module, baselines: torch.Tensor) -> tuple[Any, dict]:
    """The Captum object and its ``attribute`` options for ``name``."""
    if name == "gradient_shap":
        return GradientShap(model), {"baselines": baselines, "n_samples": 5}
    patches = torch.arange(49).reshape(7, 7).repeat_interleave(4, 0).repeat_interleave(4, 1)
    mask = patches[None, None]  # 4x4 patches: 49 features
    return KernelShap(model), {"n_samples": 32, "perturbations_per_eval": 32, "feature_mask": mask}


def bench(name: str, n: int, batch: int, repeats: int, clock: Callable[[], float]) -> None:
    torch.manual_seed(0)
    model = SmallCNN().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 1, 28, 28, generator=g)
    y = torch.arange(batch) % 10
    baselines = torch.zeros(1, 1, 28, 28)  # one row: NoiseTunnel broadcasts it
    captum, options = _method(name, model, baselines)
    explain = wrapgrad.wrap(
        model,
        name,
        enhancer="smoothgrad",
        method_options=options,
        enhancer_options={"n_samples": n, "noise_level": SIGMA, "seed": 0},
    )
    tunnel = NoiseTunnel(captum)

    def loop() -> torch.Tensor:
        total = torch.zeros_like(x)
        for _ in range(n):
            noisy = (x + SIGMA * torch.randn_like(x)).requires_grad_(name == "gradient_shap")
            total += captum.attribute(noisy, target=y, **options).detach()
        return total / n

    rows = timeit_interleaved(
        {
            "wrap": lambda: explain(x, target=y),
            "NoiseTunnel": lambda: tunnel.attribute(
                x, nt_type="smoothgrad", nt_samples=n, stdevs=SIGMA, target=y, **options
            ),
            "loop": loop,
        },
        repeats,
        torch.device("cpu"),
        clock,
    )
    print(f"\n{name}, SmoothGrad N = {n}, B = {batch}, method options {_shown(options)}")
    print(f"{'':<14}{'ms':>10}{'wrap /':>9}")
    for key, t in rows.items():
        print(f"{key:<14}{1e3 * t:>10.1f}{rows['wrap'] / t:>9.2f}")


def _shown(options: dict) -> str:
    shown = {k: v for k, v in options.items() if k not in ("baselines", "feature_mask")}
    if "feature_mask" in options:
        shown["features"] = int(options["feature_mask"].max()) + 1
    return ", ".join(f"{k}={v}" for k, v in shown.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds")
    parser.add_argument("--samples", type=int, default=10, help="SmoothGrad's N")
    parser.add_argument("--batch", type=int, default=16)
    add_clock_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="You are providing multiple inputs")  # Captum's
    repeats = 2 if args.quick else args.repeats
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"{args.threads} threads, {repeats} rounds, {args.clock} clock, load average {load}; "
        f"'wrap /' is wrap's time over the row's"
    )
    for name in ("gradient_shap", "kernel_shap"):
        bench(name, args.samples, args.batch, repeats, clock_of(args))


if __name__ == "__main__":
    main()
