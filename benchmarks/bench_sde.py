"""Cost of attribution shaping: iterative training of a shaped neural SDE as a ratio to the same
training of a Brownian one, in the same run (Jha et al. 2022 report at most 36% more).

Both models are ``wrapgrad.to_sde`` conversions of one ``small_resnet`` initialisation (3x32x32
CMNIST-like data, 10 classes), trained by :func:`wrapgrad.sde.train_sde` with the same options,
seed and batches: ``rounds x epochs_per_round`` epochs. The Brownian SDE's rounds only split the
epochs; the shaped SDE, after every round but the last, recomputes the guide maps of the training
examples with the model just trained (one Saliency pass, stored by content) and its epochs look the
maps up and pool them to each block. Printed, per setting (median over ``--repeats``, Brownian and
shaped interleaved so that a load change hits both):

* ``brownian s`` / ``shaped s``: CPU time of the whole ``train_sde`` call (``time.process_time``:
  on a shared machine far steadier than wall time; run with one torch thread, the default here);
* ``refresh share``: the part of the shaped run's wall time spent refreshing maps;
* ``overhead``: ``shaped / brownian - 1`` in CPU time (the paper's measure), and ``wall``: the
  same in wall time;

for rounds of 1, 2 and 4 epochs (how often the maps are refreshed) and a half refresh
(``refresh_fraction=0.5``). The ratios, not the seconds, are the result: the seconds depend on
the machine.

Usage::

    python benchmarks/bench_sde.py              # ~3 min on 2 CPU cores
    python benchmarks/bench_sde.py --quick      # seconds
    python benchmarks/bench_sde.py --channels-last  # as the pipeline's models train
    python benchmarks/bench_sde.py --items 4000 --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

import wrapgrad
from wrapgrad.catalog import load_dataset
from wrapgrad.registry import get_registry
from wrapgrad.sde import train_sde

#: (label, train_sde options) of the settings compared; rounds x epochs_per_round is the budget.
SETTINGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("rounds of 1 epoch", {"epochs_per_round": 1}),
    ("rounds of 2 epochs", {"epochs_per_round": 2}),
    ("rounds of 4 epochs", {"epochs_per_round": 4}),
    ("rounds of 2, half refresh", {"epochs_per_round": 2, "refresh_fraction": 0.5}),
)


def _model(seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_registry().get("model", "small_resnet").factory(in_channels=3, num_classes=10)


#: The memory format of the trained models (``--channels-last``: as the pipeline trains them).
MEMORY_FORMAT = {"format": torch.contiguous_format}


def _run(kind: str, init: torch.nn.Module, data: Any, epochs: int, options: dict[str, Any]) -> Any:
    noise = "attribution_shaped" if kind == "shaped" else "brownian"
    sde = wrapgrad.to_sde(init, sigma=0.5, noise=noise, seed=0)
    sde = sde.to(memory_format=MEMORY_FORMAT["format"])
    per_round = options["epochs_per_round"]
    rounds = max(1, epochs // per_round)
    run_options = dict(options)
    if kind != "shaped":
        run_options.pop("refresh_fraction", None)
    started = time.process_time()
    wall = time.perf_counter()
    result = train_sde(
        sde,
        data,
        rounds=rounds,
        patience=None,
        lr=1e-3,
        batch_size=64,
        seed=0,
        **run_options,
    )
    return time.process_time() - started, time.perf_counter() - wall, result


def measure(data: Any, epochs: int, options: dict[str, Any], repeats: int) -> dict[str, float]:
    """Median seconds of the Brownian and the shaped run, and the shaped run's parts."""
    init = _model(0)
    rows: dict[str, list[float]] = {"brownian": [], "shaped": [], "b_wall": [], "s_wall": []}
    rows["refresh"] = []
    for _ in range(repeats):
        for kind in ("brownian", "shaped"):
            cpu, wall, result = _run(kind, init, data, epochs, options)
            rows[kind].append(cpu)
            rows["b_wall" if kind == "brownian" else "s_wall"].append(wall)
            if kind == "shaped":
                rows["refresh"].append(result.refresh_seconds / wall)
    return {k: statistics.median(v) for k, v in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000, help="training items (CMNIST-like)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of every run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per model (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: as it is)")
    parser.add_argument("--quick", action="store_true", help="256 items, 2 epochs, 1 repeat")
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="train in the channels_last memory format (as examples/neural_sde_cmnist.toml)",
    )
    args = parser.parse_args()
    if args.channels_last:
        MEMORY_FORMAT["format"] = torch.channels_last
    if args.quick:
        args.items, args.epochs, args.repeats = 256, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    warm = load_dataset("cmnist", split="train", limit=64)
    _run("brownian", _model(0), (warm.inputs, warm.labels), 1, {"epochs_per_round": 1})  # warm-up
    train = load_dataset("cmnist", split="train", limit=args.items)
    data = (train.inputs, train.labels)
    print(
        f"small_resnet, {args.items} CMNIST-like items (3x32x32), {args.epochs} epochs, batch 64, "
        f"median of {args.repeats}, torch threads {torch.get_num_threads()}, "
        f"{'channels_last' if args.channels_last else 'contiguous'}"
    )
    print(
        f"{'setting':<28}{'brownian cpu s':>16}{'shaped cpu s':>14}{'refresh share':>15}"
        f"{'overhead':>10}{'wall':>8}"
    )
    for label, options in SETTINGS:
        if options["epochs_per_round"] >= args.epochs:  # one round: nothing is refreshed
            continue
        m = measure(data, args.epochs, options, args.repeats)
        print(
            f"{label:<28}{m['brownian']:>16.2f}{m['shaped']:>14.2f}{m['refresh']:>15.1%}"
            f"{m['shaped'] / m['brownian'] - 1:>10.1%}{m['s_wall'] / m['b_wall'] - 1:>8.1%}"
        )
    print("paper (Jha et al. 2022): shaping costs at most 36% over Brownian training")


if __name__ == "__main__":
    main()
