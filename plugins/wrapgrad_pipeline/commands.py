"""The ``run`` and ``report`` subcommands (argparse parsers and their actions)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

__all__ = ["add_report_command", "add_run_command", "default_out_dir"]


def default_out_dir(name: str, smoke: bool) -> Path:
    """``runs/<pipeline name>`` (``-smoke`` appended for smoke runs), relative to the cwd."""
    safe = "".join(c if c.isalnum() or c in "_.-" else "_" for c in name).strip("._") or "pipeline"
    return Path("runs") / (f"{safe}-smoke" if smoke else safe)


def _threads(text: str) -> int:
    """``--threads``: a whole number >= 1 (argparse names the option on anything else)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _run(args: argparse.Namespace) -> int:
    from wrapgrad_pipeline.runner import Pipeline

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # this command's process: the CLI's own setting
    pipeline = Pipeline.from_file(args.file)
    if args.check:
        print(f"{args.file}: valid pipeline {pipeline.config.name!r}")
        return 0
    out = Path(args.out) if args.out else default_out_dir(pipeline.config.name, args.smoke)
    run = pipeline.run(out, smoke=args.smoke, progress=not args.quiet, workers=args.workers)
    if not args.quiet:
        print(run.report_path.read_text(encoding="utf-8"))
    errors = run.results.get("errors", [])
    if errors:
        print(f"warning: {len(errors)} metric cell(s) could not be computed; see the report")
    print(f"report:  {run.report_path}")
    print(f"results: {run.results_path}")
    if run.figure_paths:
        print(f"figures: {run.figure_paths[0].parent} ({len(run.figure_paths)} PNG files)")
    return 0


def _report(args: argparse.Namespace) -> int:
    from wrapgrad_pipeline.report import load_results, render_markdown

    print(render_markdown(load_results(args.dir)), end="")
    return 0


def add_run_command(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Add the ``run`` command's arguments; return its action."""
    parser.add_argument(
        "file", help="the pipeline file (TOML), e.g. examples/noisegrad_cmnist.toml"
    )
    parser.add_argument("--out", help="output directory (default: runs/<pipeline name>)")
    parser.add_argument(
        "--smoke", action="store_true", help="shrink every size (tiny training, few samples) for CI"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars, no report echo"
    )
    parser.add_argument("--check", action="store_true", help="only validate the file")
    parser.add_argument(
        "--threads",
        type=_threads,
        help="torch intra-op threads (default: torch's, one per core). On a machine where other "
        "jobs run, fewer threads than cores avoid oversubscription, which can make a run "
        "several times slower; the last digits of the scores depend on the thread count",
    )
    parser.add_argument(
        "--workers",
        type=_threads,
        default=1,
        help="threads that explain the global batches, the torch threads divided among them "
        "(default 1). On a small CPU machine 2 workers of one thread each finish the explain "
        "step sooner than one of two threads; methods that draw from the global RNGs "
        "(gradient_shap, lime, ...) explain on one worker",
    )
    return _run


def add_report_command(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Add the ``report`` command's arguments; return its action."""
    parser.add_argument("dir", help="the run's output directory (or its results.json)")
    return _report
