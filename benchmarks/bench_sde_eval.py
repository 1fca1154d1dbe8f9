"""Where the ``evaluate`` step of ``examples/neural_sde_cmnist.toml`` spends its time, per model.

One ``small_resnet`` (3x32x32 CMNIST-like data, 10 classes; briefly trained: the timings do not
depend on its accuracy; the trained SDEs of the pipeline have the same network, explained with
the noise off, in the channels_last memory format as here unless ``--contiguous``) is explained as the pipeline explains each of its six models: Integrated
Gradients (16 steps), Saliency and DeepLIFT, each plain ("Baseline") and with SmoothGrad (8
samples, noise 15%). Timed, in CPU seconds (``time.process_time``, one torch thread
by default: on a shared machine far steadier than wall time), per method and enhancer:

* ``explain``: the maps of ``--samples`` items (the pipeline's ``explain`` step; IG in chunks
  of ``--internal-batch`` rows, as the toml: one pass over all ``samples x steps x SmoothGrad
  samples`` rows at once spends as much time in the kernel, allocating, as in the network);
* ``S_r``: the sensitivity metric with the toml's parameters (r 0.02, 3 steps, 1 restart,
  bounds [0, 1]) on ``--sr-samples`` items (the pipeline hands them over in batches of 32, with
  the maps at the inputs known), driven by its surrogate (``"auto"``: the
  differentiable kernel of the method; DeepLIFT's Rescale map of ``wrapgrad_metrics.rescale``);
* ``S_r spsa``: the same with ``surrogate="spsa"`` (8 SPSA directions, how DeepLIFT's S_r was
  estimated before it had a surrogate), for comparison; only with ``--spsa``;
* ``SIC``: the softmax-information curve of IG and Saliency on ``--samples`` items.

The localisation metric only reads the maps (milliseconds). The total per model times the six
models of the pipeline estimates the ``evaluate`` step; the ratios, not the seconds, are the
result.

Usage::

    python benchmarks/bench_sde_eval.py                  # ~2 min on one core
    python benchmarks/bench_sde_eval.py --spsa           # adds the SPSA column (slow)
    python benchmarks/bench_sde_eval.py --quick          # seconds
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from wrapgrad_pipeline.steps.evaluate import KnownMaps

import wrapgrad
from wrapgrad.catalog import load_dataset
from wrapgrad.registry import get_registry

METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("integrated_gradients", {"n_steps": 16}),
    ("saliency", {}),
    ("deep_lift", {}),
)
ENHANCERS: tuple[tuple[str, str | None, dict[str, Any]], ...] = (
    ("Baseline", None, {}),
    ("SG", "smoothgrad", {"n_samples": 8, "noise_level": 0.15}),
)
SENSITIVITY = {"r": 0.02, "steps": 3, "restarts": 1, "bounds": (0.0, 1.0), "seed": 0}
SIC_METHODS = ("integrated_gradients", "saliency")


def trained_model(items: int, seed: int = 0) -> torch.nn.Module:
    """``small_resnet`` after one epoch of Adam on ``items`` CMNIST-like training images."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_registry().get("model", "small_resnet").factory(in_channels=3, num_classes=10)
        train = load_dataset("cmnist", split="train", limit=items)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        order = torch.randperm(items)
        model.train()
        for i in range(0, items, 64):
            idx = order[i : i + 64]
            opt.zero_grad()
            F.cross_entropy(model(train.inputs[idx]), train.labels[idx]).backward()
            opt.step()
    return model.eval()


def cpu(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    """CPU seconds of ``fn(*args, **kwargs)``."""
    started = time.process_time()
    fn(*args, **kwargs)
    return time.process_time() - started


def time_row(
    model: torch.nn.Module, x: Tensor, y: Tensor, k: int, explain: Any, method: str, spsa: bool
) -> dict[str, float]:
    """The CPU seconds of one method and enhancer: its maps, S_r (and by SPSA), SIC."""
    started = time.process_time()
    maps = explain(x, target=y)
    row = {"explain": time.process_time() - started}
    # as the pipeline hands it over: an explain that knows the maps at the inputs
    known = KnownMaps(explain, x[:k], y[:k], maps[:k])
    metric = wrapgrad.metric("sensitivity", **SENSITIVITY)
    row["S_r"] = cpu(metric, model, x[:k], y[:k], known)
    if spsa:
        by_spsa = wrapgrad.metric("sensitivity", surrogate="spsa", **SENSITIVITY)
        row["S_r spsa"] = cpu(by_spsa, model, x[:k], y[:k], known)
    row["SIC"] = 0.0
    if method in SIC_METHODS:
        row["SIC"] = cpu(wrapgrad.metric("sic"), model, x, y, explain)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=64, help="explained items ([data])")
    parser.add_argument(
        "--sr-samples", type=int, default=32, help="items S_r is computed on (one batch)"
    )
    parser.add_argument("--train-items", type=int, default=1000, help="items of the warm-up fit")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: as it is)")
    parser.add_argument(
        "--internal-batch",
        type=int,
        default=128,
        help="IG's internal_batch_size (rows per forward pass, as the toml; 0: all at once)",
    )
    parser.add_argument("--spsa", action="store_true", help="also time S_r by SPSA")
    parser.add_argument(
        "--contiguous",
        action="store_true",
        help="the model in the contiguous memory format (default: channels_last, as the "
        "pipeline's models)",
    )
    parser.add_argument("--quick", action="store_true", help="8 items, a 256-item fit")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.sr_samples, args.train_items = 8, 8, 256
    if args.threads:
        torch.set_num_threads(args.threads)
    model = trained_model(args.train_items)
    if not args.contiguous:
        model = model.to(memory_format=torch.channels_last)
    test = load_dataset("cmnist", split="test")
    x, y = test.inputs[: args.samples], test.labels[: args.samples]
    k = min(args.sr_samples, args.samples)
    accuracy = float((model(x).argmax(1) == y).float().mean())
    print(
        f"small_resnet (accuracy {accuracy:.2f} on the {args.samples} items), torch threads "
        f"{torch.get_num_threads()}; CPU seconds per model; S_r on {k} items; IG internal "
        f"batch {args.internal_batch or 'none'}; "
        f"{'contiguous' if args.contiguous else 'channels_last'}"
    )
    columns = ["explain", "S_r", *(["S_r spsa"] if args.spsa else []), "SIC"]
    print(f"{'method':<22}{'enhancer':<10}" + "".join(f"{c:>10}" for c in columns))
    totals = dict.fromkeys(columns, 0.0)
    for method, method_options in METHODS:
        if method == "integrated_gradients" and args.internal_batch:
            method_options = {**method_options, "internal_batch_size": args.internal_batch}
        for label, enhancer, enhancer_options in ENHANCERS:
            explain = wrapgrad.wrap(
                model,
                method,
                enhancer,
                method_options=method_options,
                enhancer_options={**enhancer_options, "seed": 0} if enhancer else None,
            )
            row = time_row(model, x, y, k, explain, method, args.spsa)
            for c in columns:
                totals[c] += row[c]
            print(f"{method:<22}{label:<10}" + "".join(f"{row[c]:>10.2f}" for c in columns))
    print(f"{'total per model':<32}" + "".join(f"{totals[c]:>10.2f}" for c in columns))
    main_cost = totals["explain"] + totals["S_r"] + totals["SIC"]
    print(
        f"explain + S_r + SIC per model: {main_cost:.1f} s; x 6 models: {6 * main_cost:.0f} s "
        f"(S_r share {totals['S_r'] / main_cost:.0%})"
    )


if __name__ == "__main__":
    main()
