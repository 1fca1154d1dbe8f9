"""Speed of wrapgrad's enhancers against baselines measured in the same run.

Baselines (Saliency as the base method, ``N`` samples, batch ``B``):

* **floor**: one batched forward + backward over the same ``N·B`` inputs, no noise logic;
* **NoiseTunnel**: Captum's SmoothGrad (``nt_samples=N`` in one batch);
* **reference NoiseGrad**: the NoiseGrad authors' code (``src/noisegrad.py`` of
  ``understandable-machine-intelligence-lab/NoiseGrad``) line for line: per sample, the saved
  weights loaded back with ``load_state_dict``, every parameter multiplied in place by a draw of
  ``torch.distributions.Normal(1, sigma)``, then Captum's Saliency on the perturbed model (a
  baseline only: wrapgrad never edits a model; see :func:`reference_noisegrad_fns`).

Printed: median wall time per call and ratios, the time the engine spends drawing NoiseGrad's
weight noise alone (its share of a NoiseGrad call), and the time the reference spends loading
and drawing its weights alone (its share of the reference call). Targets (issues 4 and 12, CPU):
SmoothGrad <= 1.1x floor; NoiseGrad <= 1.25x floor and faster than the reference; FusionGrad
<= 1.2x NoiseGrad at the same total sample count.

Models: ``cnn`` (1x28x28, conv 32 and 64 channels 3x3 with padding, each followed by ReLU and
2x2 max-pooling, 128 hidden units, 10 classes), ``plaincnn`` (the same without padding: the
issue-12 case) and ``resnet`` (3x32x32, BatchNorm, one block per stage).

Usage::

    python benchmarks/bench_enhancers.py            # full run (~2-3 min on 2 CPU cores)
    python benchmarks/bench_enhancers.py --quick    # seconds
    python benchmarks/bench_enhancers.py --threads 1 --clock cpu   # on a shared machine
    python benchmarks/bench_enhancers.py --device cuda --batch 64 --samples 10
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import wrapgrad


class SmallCNN(nn.Module):
    """MNIST-sized CNN: 1x28x28 -> conv 32 (3x3) -> ReLU -> 2x2 max-pool -> conv 64 (3x3) ->
    ReLU -> 2x2 max-pool -> 128 hidden units -> 10 classes. ``padding=1`` (the ``cnn`` case)
    keeps 28 -> 14 -> 7; ``padding=0`` (``plaincnn``, the issue-12 case) gives 26 -> 13 -> 11 -> 5."""

    def __init__(self, padding: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=padding), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=padding), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        side = 7 if padding else 5
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Linear(128, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.short(x))


class SmallResNet(nn.Module):
    """A small ResNet for 3x32x32 images (16/32/64 channels, one block per stage)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16))
        self.layers = nn.Sequential(Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2))
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layers(torch.relu(self.stem(x)))
        return self.head(h.mean(dim=(2, 3)))


def timeit_interleaved(
    fns: dict[str, Callable[[], Any]],
    repeats: int,
    device: torch.device,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median seconds per call of each function, timed round-robin after one warm-up call each.

    Round-robin (every function once per round) keeps the ratios fair when the machine's load
    drifts during the run. ``clock``: wall time (default) or ``time.process_time`` (CPU seconds
    of every thread of the process: what a call costs, not counting time spent waiting for a
    core on a shared machine).
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = clock()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[key].append(clock() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def add_clock_argument(parser: argparse.ArgumentParser) -> None:
    """``--clock wall|cpu`` (see :func:`clock_of`)."""
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time (default), or the process's CPU time (with --threads 1 on a shared "
        "machine: the cost of a call without the time spent waiting for a core)",
    )


def clock_of(args: argparse.Namespace) -> Callable[[], float]:
    """The timer ``--clock`` names: ``time.perf_counter`` or ``time.process_time``."""
    return time.process_time if args.clock == "cpu" else time.perf_counter


def floor_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n: int) -> Callable[[], Any]:
    """One forward + backward over the N·B inputs: the cost any N-sample method must pay."""
    xs = x.repeat(n, *([1] * (x.dim() - 1)))
    ys = y.repeat(n)

    def run() -> Any:
        inp = xs.clone().requires_grad_()
        out = model(inp)
        (g,) = torch.autograd.grad(out.gather(1, ys[:, None]).sum(), inp)
        return g.reshape(n, *x.shape).abs().mean(0)

    return run


def noise_tunnel_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n: int, sigma: float):
    from captum.attr import NoiseTunnel, Saliency

    nt = NoiseTunnel(Saliency(model))
    return lambda: nt.attribute(
        x, nt_type="smoothgrad", nt_samples=n, nt_samples_batch_size=n, stdevs=sigma, target=y
    )


def weight_draws_fn(
    model: nn.Module, x: torch.Tensor, n: int, sigma: float
) -> Callable[[], Any] | None:
    """Only the weight noise NoiseGrad draws in one call: the engine's sampler drawing ``n``
    weight samples from their per-sample seeds, as many at once as the engine draws them (the
    share of the call that is noise drawing). None with an engine older than the
    ``wrapgrad.engine`` package (for before/after runs)."""
    try:
        from wrapgrad.engine.rng import derive_seeds, make_generator
        from wrapgrad.engine.sampler import Sampler
    except ImportError:
        return None
    try:
        from wrapgrad.engine.plan import draw_ahead
    except ImportError:  # an engine that draws one weight sample at a time

        def draw_ahead(*args: Any) -> int:
            return 1

    from wrapgrad.registry import get_registry

    perturber = get_registry().get("perturber", "weight_multiplicative").factory(sigma=sigma)

    def run() -> Any:
        seeds = derive_seeds(make_generator(x.device, seed=0), (n, 2))
        sampler = Sampler(model, (x,), seeds, perturber)
        sampler.ahead = draw_ahead(x.device, sampler.weight_bytes, n)
        return [sampler.weights(k) for k in range(n)]

    return run


def reference_noisegrad_fns(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, n: int, sigma: float
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """The NoiseGrad paper code's procedure, line for line (Bykov et al.'s repository
    ``understandable-machine-intelligence-lab/NoiseGrad``, ``src/noisegrad.py``, class
    ``NoiseGrad``, at commit ``c1b9a0c``; its example notebook saves the weights once with
    ``copy.deepcopy(model.state_dict())``).

    Set-up (``NoiseGrad.__init__``, outside the timed call): the saved weights and
    ``torch.distributions.Normal(1, sigma)``. Per call (``enhance_explanation``): a zero tensor
    for the ``n`` maps; per sample, ``sample()`` (``model.load_state_dict(weights)``, then for
    every parameter, under ``no_grad``, ``layer.mul_(distribution.sample(layer.size())
    .to(layer.device))``), then the explanation of the perturbed model (``model.to(device)``
    and Captum's ``Saliency(model).attribute(inputs, targets, abs=True)``, the repository's
    ``saliency_explainer`` without its channel sum and reshape to one image); finally the mean
    over the ``n`` maps. The authors' code perturbs the model it is given in place, so the
    procedure runs on a private deep copy made once here (never inside the timed call): the
    benchmark's model, which the other entries use, stays untouched. Global RNG, as there; no
    progress bar (``verbose=False``).

    Returns ``(run, draws)``: one call of the procedure, and its ``n`` calls of ``sample()``
    alone (what the procedure spends drawing and loading weights).
    """
    from captum.attr import Saliency

    noisy = copy.deepcopy(model)
    weights = copy.deepcopy(noisy.state_dict())
    distribution = torch.distributions.normal.Normal(loc=1.0, scale=sigma)

    def sample() -> None:
        noisy.load_state_dict(weights)
        with torch.no_grad():
            for layer in noisy.parameters():
                layer.mul_(distribution.sample(layer.size()).to(layer.device))

    def run() -> Any:
        explanation = torch.zeros((n, *x.shape), device=x.device)
        for i in range(n):
            sample()
            explanation[i] = Saliency(noisy.to(x.device)).attribute(x, target=y, abs=True)
        return explanation.mean(0)

    def draws() -> None:
        for _ in range(n):
            sample()

    return run, draws


def bench_model(
    label: str,
    model: nn.Module,
    shape: tuple[int, ...],
    args: argparse.Namespace,
    device: torch.device,
) -> list[tuple[str, str, float, float, str]]:
    model = model.to(device).eval()
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(args.batch, *shape, generator=g, device=device)
    y = torch.randint(0, 10, (args.batch,), generator=g, device=device)
    n, r = args.samples, args.repeats
    opts: dict[str, Any] = {"progress": False, "seed": 0}
    if args.max_batch:
        opts["max_batch"] = args.max_batch
    m = max(1, n // 2)
    auto = "vmap" if device.type != "cpu" else "loop"
    # The enhancers timed on the model, and on it with BatchNorm folded (row name -> enhancer,
    # options).
    enhancers: dict[str, tuple[str, dict[str, Any]]] = {
        "smoothgrad": ("smoothgrad", {"n_samples": n, "input_sigma": 0.1}),
        f"noisegrad (auto={auto})": ("noisegrad", {"n_samples": n, "sigma": 0.2}),
        f"fusiongrad ({m}x{max(1, n // m)})": (
            "fusiongrad",
            {"n_models": m, "n_samples": max(1, n // m)},
        ),
    }

    def timed(net: nn.Module) -> dict[str, Callable[[], Any]]:
        out = {}
        for name, (enhancer, options) in enhancers.items():
            explain = wrapgrad.wrap(net, "saliency", enhancer, **options, **opts)
            out[name] = lambda explain=explain: explain(x, target=y)
        return out

    plain = timed(model)
    ngv = wrapgrad.wrap(
        model, "saliency", "noisegrad", n_samples=n, sigma=0.2, strategy="vmap", **opts
    )
    ng_name, fg_name = list(enhancers)[1:]
    reference, reference_draws = reference_noisegrad_fns(model, x, y, n, 0.2)
    fns: dict[str, Callable[[], Any]] = {
        "floor (fwd+bwd on N*B)": floor_fn(model, x, y, n),
        "smoothgrad": plain["smoothgrad"],
        "captum NoiseTunnel": noise_tunnel_fn(model, x, y, n, 0.1),
        ng_name: plain[ng_name],
        "noisegrad (vmap)": lambda: ngv(x, target=y),
        "reference noisegrad": reference,
        fg_name: plain[fg_name],
    }
    folded = wrapgrad.fold_batchnorm(model)
    unfolded_of: dict[str, str] = {}  # a folded entry's name -> its unfolded entry's
    if folded.pairs:  # BatchNorm folded into the convolutions (wrapgrad.folding)
        for name, fn in timed(folded).items():
            fns[f"{name} [folded BN]"] = fn
            unfolded_of[f"{name} [folded BN]"] = name
    draws = weight_draws_fn(model, x, n, 0.2)
    if draws is not None:
        fns["noisegrad weight draws only"] = draws
    fns["reference weight draws only"] = reference_draws
    times = timeit_interleaved(fns, r, device, clock_of(args))
    floor = times["floor (fwd+bwd on N*B)"]
    ng_time = times[f"noisegrad (auto={auto})"]
    ref = times["reference noisegrad"]
    out = []
    for name, t in times.items():
        vs = ""
        if name in unfolded_of:
            vs = f"{t / times[unfolded_of[name]]:.2f}x unfolded"
        elif name == "noisegrad weight draws only":
            vs = f"{t / ng_time:.2f}x noisegrad"
        elif name == "reference weight draws only" or name.startswith("noisegrad"):
            vs = f"{t / ref:.2f}x reference"
        elif name.startswith("fusiongrad"):
            vs = f"{t / ng_time:.2f}x noisegrad"
        elif name == "smoothgrad":
            vs = f"{t / times['captum NoiseTunnel']:.2f}x NoiseTunnel"
        out.append((label, name, t, t / floor, vs))
        print(f"  {label:8s} {name:28s} {t * 1e3:9.1f} ms", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (seconds)")
    parser.add_argument("--batch", type=int, default=32, help="B (default 32)")
    parser.add_argument("--samples", type=int, default=10, help="N (default 10)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per entry")
    parser.add_argument("--max-batch", type=int, default=None, help="engine rows per call")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    add_clock_argument(parser)
    parser.add_argument(
        "--models", default="cnn,plaincnn,resnet", help="comma list: cnn, plaincnn, resnet"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.samples, args.repeats = 4, 4, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    device = torch.device(args.device)
    table = []
    models = {
        "cnn": (SmallCNN, (1, 28, 28)),
        "plaincnn": (lambda: SmallCNN(padding=0), (1, 28, 28)),
        "resnet": (SmallResNet, (3, 32, 32)),
    }
    for key in args.models.split(","):
        cls, shape = models[key.strip()]
        table += bench_model(key.strip(), cls(), shape, args, device)
    load = "/".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"\ndevice={device} threads={torch.get_num_threads()} B={args.batch} N={args.samples} "
        f"repeats={args.repeats} clock={args.clock} torch={torch.__version__} "
        f"load(1/5/15 min)={load}\n"
    )
    print("| model | method | ms / call | x floor | other ratio |")
    print("|---|---|---:|---:|---|")
    for lab, name, t, ratio, vs in table:
        print(f"| {lab} | {name} | {t * 1e3:.1f} | {ratio:.2f} | {vs} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
