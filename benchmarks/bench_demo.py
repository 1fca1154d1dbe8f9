"""CPU cost of the demo (``examples/noisegrad_cmnist.toml``) by stage and by its largest parts.

On a shared machine wall time says little; this benchmark reports the process's CPU time
(user + system, all threads, ``getrusage``) and its minor page faults, per part:

* ``pipeline``: the whole demo file, as ``wrapgrad run`` runs it (the CLI's allocator setting
  included), with CPU time and page faults per pipeline step; ``--profile FILE`` writes a
  cProfile of it;
* ``explain``: one global batch of the demo's explain step (64 samples of Saliency and 32 of
  Integrated Gradients, Baseline / SG / NG / FG at the demo's calibrated levels, 3 enhancer
  seeds), on the cached demo model when there is one, else on an untrained one;
* ``faithfulness``: one batch of FaithfulnessCorrelation as the evaluate step runs it (100 runs,
  |S| = 32, black baseline, 64 samples, 4 variants x 3 seeds of Saliency maps): Quantus' own
  class, the same with shared predictions (the bridge before its plan), and the bridge's
  (``plugins/wrapgrad_quantus/faithfulness.py``), with the scores compared;
* ``blocks``: the folded ``small_resnet`` with two blocks (the demo's) against three, per image:
  an input gradient and a forward pass, the two alternated, as ratios.

``--malloc default`` turns the CLI's allocator setting off for the run
(``WRAPGRAD_KEEP_FREED_MEMORY=0``; :mod:`wrapgrad.allocator`), so both can be compared.

Usage::

    python benchmarks/bench_demo.py explain --threads 1 [--malloc default] [--fold]
    python benchmarks/bench_demo.py faithfulness --threads 1
    python benchmarks/bench_demo.py blocks --threads 1
    WRAPGRAD_CACHE=$(mktemp -d) python benchmarks/bench_demo.py pipeline --out /tmp/d
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "noisegrad_cmnist.toml"
#: The demo's calibrated levels (docs/demo.md), used when the run does not calibrate.
SIGMA_NG, ALPHA_SG = 0.0677, 0.0771


class Usage:
    """CPU seconds (user + system), minor page faults and wall seconds since :meth:`start`."""

    def start(self) -> Usage:
        self._r = resource.getrusage(resource.RUSAGE_SELF)
        self._w = time.perf_counter()
        return self

    def stop(self) -> dict[str, float]:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "cpu_s": r.ru_utime + r.ru_stime - self._r.ru_utime - self._r.ru_stime,
            "user_s": r.ru_utime - self._r.ru_utime,
            "sys_s": r.ru_stime - self._r.ru_stime,
            "minflt": r.ru_minflt - self._r.ru_minflt,
            "wall_s": time.perf_counter() - self._w,
        }


def show(label: str, u: dict[str, float]) -> None:
    print(
        f"{label:<28} cpu {u['cpu_s']:8.2f} s (user {u['user_s']:7.2f}, sys {u['sys_s']:6.2f})"
        f"  minflt {int(u['minflt']):>10,}  wall {u['wall_s']:7.2f} s",
        flush=True,
    )


@contextmanager
def measured(label: str, into: dict[str, dict[str, float]] | None = None) -> Iterator[None]:
    u = Usage().start()
    yield
    result = u.stop()
    if into is not None:
        into[label] = result
    show(label, result)


# -- the pipeline -----------------------------------------------------------------------------
def patch_steps(usage: dict[str, dict[str, float]]) -> None:
    """Wrap every built-in step's ``run`` to record its CPU time and page faults."""
    from wrapgrad_pipeline.plan import installed_steps

    for name, (_spec, step) in installed_steps().items():
        cls = type(step)
        if getattr(cls.run, "_bench", False):
            continue
        original = cls.run

        def run(self: Any, table: Any, context: Any, _o: Any = original, _n: str = name) -> Any:
            with measured(f"step {_n}", usage):
                return _o(self, table, context)

        run._bench = True  # type: ignore[attr-defined]
        cls.run = run  # type: ignore[method-assign]


def pipeline(args: argparse.Namespace) -> None:
    from wrapgrad.cli import main

    usage: dict[str, dict[str, float]] = {}
    patch_steps(usage)
    argv = ["run", str(args.file), "--out", args.out, "-q", "--workers", str(args.workers)]
    argv += ["--smoke"] if args.smoke else []
    total = Usage().start()
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
        rc = prof.runcall(main, argv)
        prof.dump_stats(args.profile)
    else:
        rc = main(argv)
    show("total", total.stop())
    if rc:
        sys.exit(rc)


# -- the explain step, one batch --------------------------------------------------------------
def demo_model() -> torch.nn.Module:
    """The demo's recipe-trained model from the cache, or an untrained one of the same shape
    (the cost of a gradient does not depend on the weights)."""
    import tomllib
    from wrapgrad_data.cache import cache_paths
    from wrapgrad_data.training import build_model, get_recipe

    overrides = tomllib.loads(DEMO.read_text(encoding="utf-8"))["model"].get("recipe", {})
    model = build_model(get_recipe("small_resnet", "cmnist", **overrides), 3, 10)
    path, _ = cache_paths("small_resnet", "cmnist", 0, **overrides)
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        print(f"model: cached demo model {path}")
    else:
        print("model: untrained small_resnet (no cached demo model)")
    return model.eval()


def demo_batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    from wrapgrad_data.cmnist import load_cmnist

    data = load_cmnist("test", 0)
    return data.inputs[:n], data.labels[:n]


VARIANTS: dict[str, tuple[str | None, dict[str, Any]]] = {
    "Baseline": (None, {}),
    "SG": ("smoothgrad", {"n_samples": 10, "noise_level": ALPHA_SG}),
    "NG": ("noisegrad", {"n_samples": 10, "sigma": SIGMA_NG}),
    "FG": (
        "fusiongrad",
        {"n_models": 10, "n_samples": 10, "sigma": SIGMA_NG / 2, "noise_level": ALPHA_SG / 2},
    ),
}


def explain_fns(model: torch.nn.Module, method: str, seeds: int) -> dict[str, Callable[..., Any]]:
    from wrapgrad.wrapping import wrap

    method_options: dict[str, Any] = {"abs": False} if method == "saliency" else {"n_steps": 4}
    out: dict[str, Callable[..., Any]] = {}
    for label, (enhancer, options) in VARIANTS.items():
        if enhancer is None:
            out[label] = wrap(model, method, method_options=method_options)
            continue
        opts = {**options, "abs_per_sample": True, "progress": False}
        fns = [
            wrap(model, method, enhancer, method_options=method_options,
                 enhancer_options={**opts, "seed": s})
            for s in range(seeds)
        ]  # fmt: skip
        out[label] = lambda x, target, fns=fns: [f(x, target=target) for f in fns]
    return out


def explain(args: argparse.Namespace) -> None:
    model = demo_model()
    if args.fold:  # the demo's [model].fold_batchnorm
        from wrapgrad.folding import fold_batchnorm

        model = fold_batchnorm(model)
    x, y = demo_batch(64)
    usage: dict[str, dict[str, float]] = {}
    for method, n in (("saliency", 64), ("integrated_gradients", 32)):
        if args.method and method != args.method:
            continue
        for label, fn in explain_fns(model, method, args.seeds).items():
            if args.variant and label != args.variant:
                continue
            with measured(f"{method} {label}", usage):
                fn(x[:n], target=y[:n])
    show(
        "explain (sum)", {k: sum(u[k] for u in usage.values()) for k in next(iter(usage.values()))}
    )


# -- FaithfulnessCorrelation, one batch -------------------------------------------------------
def faithfulness(args: argparse.Namespace) -> None:
    import numpy as np
    import quantus
    from wrapgrad_quantus import quantus_metric

    model = demo_model()
    x, y = demo_batch(64)
    maps = []
    for fn in explain_fns(model, "saliency", args.seeds).values():
        out = fn(x, target=y)
        maps += out if isinstance(out, list) else [out]
    params = {"nr_runs": 100, "subset_size": 32, "perturb_baseline": "black", "abs": True}
    results = {}
    for kind in args.kinds:
        with measured(f"faithfulness {kind}"):
            scores = []
            for a in maps:
                metric = quantus_metric(
                    "FaithfulnessCorrelation",
                    seed=0,
                    batch_size=64,
                    share_predictions=kind != "quantus",
                    **params,
                )
                if kind != "bridge":  # Quantus' own class (the bridge's before the plan)
                    metric.quantus = quantus.FaithfulnessCorrelation(
                        return_aggregate=False, disable_warnings=True, **params
                    )
                scores.append(np.asarray(metric(model, x, y, a_batch=a)))
        results[kind] = np.stack(scores)
    for kind in results:
        same = np.array_equal(results[kind], results[args.kinds[0]])
        print(f"{kind} scores equal {args.kinds[0]}'s: {same}")


# -- the demo's model, two blocks against three --------------------------------------------------
def blocks(args: argparse.Namespace) -> None:
    """Per image, the folded ``small_resnet`` with 2 blocks against 3 (untrained weights: the
    cost does not depend on them): an input gradient (Saliency's forward + backward) and a
    forward pass without gradients, on ``args.rows`` rows, the two models alternated in each of
    ``args.rounds`` rounds; the ratio per round and its median."""
    import statistics

    from wrapgrad_data.models import small_resnet

    from wrapgrad.folding import fold_batchnorm

    torch.manual_seed(0)
    models = {b: fold_batchnorm(small_resnet(3, 10, blocks=b).eval()) for b in (3, 2)}
    x = torch.rand(args.rows, 3, 32, 32)
    y = torch.randint(0, 10, (args.rows,))

    def gradient(model: torch.nn.Module) -> None:
        xx = x.clone().requires_grad_()
        torch.autograd.grad(model(xx).gather(1, y[:, None]).sum(), xx)

    def forward(model: torch.nn.Module) -> None:
        with torch.no_grad():
            model(x)

    for name, fn in (("input gradient", gradient), ("forward", forward)):
        per_image: dict[int, list[float]] = {3: [], 2: []}
        for _ in range(args.rounds):
            for b, model in models.items():
                fn(model)  # warm
                start = time.perf_counter()
                for _ in range(args.calls):
                    fn(model)
                per_image[b].append((time.perf_counter() - start) / args.calls / args.rows)
        ratios = [two / three for two, three in zip(per_image[2], per_image[3], strict=True)]
        print(
            f"{name:15s} 3 blocks {statistics.median(per_image[3]) * 1e3:.3f} ms/image, "
            f"2 blocks {statistics.median(per_image[2]) * 1e3:.3f} ms/image; 2/3 per round "
            f"{', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    p = sub.add_parser("pipeline", help="the whole demo file, CPU time per step")
    p.add_argument("--file", default=str(DEMO))
    p.add_argument("--out", default="runs/bench_demo")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--profile", help="write a cProfile of the run to this file")
    p.add_argument(
        "--workers", type=int, default=2, help="wrapgrad run --workers (default 2, as the demo)"
    )
    for name, helptext in (
        ("explain", "one batch of the explain step"),
        ("faithfulness", "one batch of FaithfulnessCorrelation, Quantus vs the bridge"),
    ):
        q = sub.add_parser(name, help=helptext)
        q.add_argument("--seeds", type=int, default=3, help="enhancer seeds (default 3)")
        if name == "faithfulness":
            q.add_argument(
                "--kinds",
                nargs="+",
                choices=("quantus", "quantus_shared", "bridge"),
                default=["quantus", "quantus_shared", "bridge"],
                help="quantus: Quantus' class, every forward pass; quantus_shared: the same "
                "through the bridge's MemoModel (share_predictions); bridge: the planned class",
            )
        if name == "explain":
            q.add_argument("--method", choices=("saliency", "integrated_gradients"))
            q.add_argument("--variant", choices=tuple(VARIANTS))
            q.add_argument(
                "--fold",
                action="store_true",
                help="explain wrapgrad.fold_batchnorm(model), as the demo's [model] does",
            )
    q = sub.add_parser("blocks", help="the folded small_resnet's cost per image, 2 blocks vs 3")
    q.add_argument("--rows", type=int, default=128, help="rows a call (default 128)")
    q.add_argument("--calls", type=int, default=5, help="timed calls a round (default 5)")
    q.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    for q in sub.choices.values():
        q.add_argument("--threads", type=int, help="torch intra-op threads")
        q.add_argument(
            "--malloc",
            choices=("keep", "default"),
            default="keep",
            help="keep: the CLI's allocator setting (wrapgrad.allocator); default: glibc's",
        )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.malloc == "default":
        os.environ["WRAPGRAD_KEEP_FREED_MEMORY"] = "0"
    if args.part != "pipeline":  # the pipeline part goes through wrapgrad.cli.main, which sets it
        from wrapgrad.allocator import keep_freed_memory

        print("allocator:", keep_freed_memory() or "glibc defaults")
    parts = {
        "pipeline": pipeline,
        "explain": explain,
        "faithfulness": faithfulness,
        "blocks": blocks,
    }
    parts[args.part](args)


if __name__ == "__main__":
    main()
