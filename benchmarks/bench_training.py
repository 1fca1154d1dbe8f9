"""Cost of a training step per objective, as a ratio to a natural step in the same run, and the
memory of Integrated Gradients' ``steps * B`` interpolation batch.

A step is one call of the objective on a batch plus ``backward`` and the optimiser step, for the
MNIST-sized small CNN (``small_cnn``: 32/64 channels, 1x28x28 -> 10). Each objective runs with its
``embedded`` preset (``wrapgrad_robust.presets``) unless ``--paper`` asks for the papers'
settings (40 PGD steps, 10 IG points, ...). Printed: the median wall time per step and its ratio
to the natural step.

Memory: the bytes autograd saves for the backward pass (``torch.autograd.graph.saved_tensors_hooks``,
each storage counted once) while computing one differentiable IG map with ``create_graph=True``
and a loss of it, for ``ig_steps`` in 1, 2, 4, 8, 16: it grows linearly with ``steps * B`` (the
rows the model sees), which is what ``ig_steps`` and ``batch_size`` trade. On CUDA the peak
allocated memory is printed too.

Usage::

    python benchmarks/bench_training.py             # ~2 min on 2 CPU cores
    python benchmarks/bench_training.py --quick     # seconds
    python benchmarks/bench_training.py --device cuda --batch 128 --paper
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

import wrapgrad
from wrapgrad.differentiable import integrated_gradients
from wrapgrad.registry import get_registry

OBJECTIVES = ("natural", "pgd", "ig_norm", "ig_sum_norm", "aat", "adv_aat")
LOOP_KEYS = {"optimizer", "batch_size", "epochs", "lr", "scheduler", "weight_decay"}


def small_cnn(device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return (
        get_registry().get("model", "small_cnn").factory(in_channels=1, num_classes=10).to(device)
    )


def objective_options(name: str, paper: bool) -> dict[str, Any]:
    from wrapgrad_robust.presets import preset

    return {
        k: v
        for k, v in preset(name, "paper" if paper else "embedded").items()
        if k not in LOOP_KEYS
    }


def step_times(
    name: str, x: torch.Tensor, y: torch.Tensor, repeats: int, paper: bool
) -> list[float]:
    model = small_cnn(x.device)
    objective = get_registry().get("objective", name).factory(**objective_options(name, paper))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    times = []
    for i in range(repeats + 1):  # the first step warms up
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = objective(model, x, y, generator=torch.Generator().manual_seed(i))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return times


def saved_bytes(x: torch.Tensor, y: torch.Tensor, ig_steps: int) -> tuple[int, int | None]:
    """Bytes saved for backward while building sum |IG(x)| with create_graph=True (and
    the CUDA peak), for one batch."""
    model = small_cnn(x.device)
    seen: dict[Any, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            key = t.untyped_storage().data_ptr()
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        except (RuntimeError, NotImplementedError):  # tensors without storage
            pass
        return t

    if x.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(x.device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        maps = integrated_gradients(model, x, y, n_steps=ig_steps)
        loss = maps.abs().sum()
    peak = torch.cuda.max_memory_allocated(x.device) if x.device.type == "cuda" else None
    del loss, maps
    return sum(seen.values()), peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument(
        "--paper", action="store_true", help="the papers' settings, not the embedded preset"
    )
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.repeats, args.batch = 2, 16
    device = torch.device(args.device)
    x, y = wrapgrad.load_dataset("mnist", split="train").tensors()
    x, y = x[: args.batch].to(device), y[: args.batch].to(device)
    print(
        f"device {device}, batch {args.batch}, {torch.get_num_threads()} threads, "
        f"{'paper' if args.paper else 'embedded'} settings\n"
    )
    print(f"{'objective':<12} {'ms/step':>9} {'x natural':>10}  options")
    base = None
    for name in OBJECTIVES:
        t = statistics.median(step_times(name, x, y, args.repeats, args.paper)) * 1e3
        base = base or t
        print(
            f"{name:<12} {t:9.1f} {t / base:10.1f}  {objective_options(name, args.paper)}",
            flush=True,
        )
    print(f"\n{'ig_steps':>8} {'rows':>6} {'saved MiB':>10} {'MiB/row':>8} {'CUDA peak MiB':>14}")
    for steps in (1, 2, 4, 8, 16):
        saved, peak = saved_bytes(x, y, steps)
        rows = steps * args.batch
        cuda = "" if peak is None else f"{peak / 2**20:14.1f}"
        print(f"{steps:8d} {rows:6d} {saved / 2**20:10.1f} {saved / rows / 2**20:8.3f} {cuda}")


if __name__ == "__main__":
    main()
