"""The ``wrapgrad`` command line.

``wrapgrad plugins`` and ``wrapgrad --version`` live here; every other subcommand comes from a
plugin's ``wrapgrad_commands`` hook (see :mod:`wrapgrad.hookspecs`), built-ins included.

What several plugins' commands share lives here too, so that a flag means the same in every
command: :func:`add_source_arguments` (a registered model and data set), and for a command that
trains a model (``wrapgrad train``, ``wrapgrad sde``) :func:`add_training_arguments`, then in
its action :func:`training_data`, :func:`loop_options` and :func:`write_summary`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import wrapgrad
from wrapgrad.errors import WrapgradError, WrapgradValueError, WrapgradWarning

if TYPE_CHECKING:
    from wrapgrad.records import CommandSpec


# -- what plugins' commands share -----------------------------------------------------------------
def add_source_arguments(parser: argparse.ArgumentParser, *, model: str, dataset: str) -> None:
    """``--model`` and ``--dataset``: a registered model and data set by name, with the
    command's defaults."""
    parser.add_argument("--model", default=model, help=f"registered model (default: {model})")
    parser.add_argument(
        "--dataset", default=dataset, help=f"registered data set (default: {dataset})"
    )


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of a command that trains a model: ``--out DIR`` (required), ``--seed``,
    ``--batch-size`` and ``--lr`` (over the command's preset), ``--device``, ``--resume`` (from
    ``DIR/checkpoint.pt``) and ``-q/--quiet`` (:func:`loop_options`), ``--limit``,
    ``--eval-samples`` and ``--threads`` (:func:`training_data`)."""
    parser.add_argument("--out", required=True, help="output folder (DIR)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and training seed")
    parser.add_argument("--batch-size", dest="batch_size", type=int, help="batch size")
    parser.add_argument("--lr", type=float, help="learning rate")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cpu)")
    parser.add_argument("--limit", type=int, help="train on the first N training items only")
    parser.add_argument(
        "--threads", type=int, help="torch intra-op threads (1 is faster on a busy small machine)"
    )
    parser.add_argument(
        "--eval-samples", dest="eval_samples", type=int, default=1000, help="test samples"
    )
    parser.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def training_data(args: argparse.Namespace) -> tuple[Any, tuple[Any, Any]]:
    """``(train set, (test inputs, test labels))`` of a training command: ``--threads`` applied
    to torch, then :func:`wrapgrad.catalog.train_and_test` of ``--dataset`` (the first
    ``--limit`` training items; ``--eval-samples`` test items)."""
    import torch

    from wrapgrad.catalog import train_and_test

    if args.threads:
        torch.set_num_threads(args.threads)
    return train_and_test(args.dataset, limit=args.limit, test_samples=args.eval_samples)


def loop_options(args: argparse.Namespace, eval_data: Any) -> dict[str, Any]:
    """The keywords of :func:`wrapgrad.train` (and of what trains on it) that a training
    command's arguments set: ``seed``, ``device``, ``checkpoint_dir`` (``--out``), ``resume``,
    ``progress`` (not ``--quiet``), and ``eval_data``."""
    return {
        "seed": args.seed,
        "device": args.device,
        "checkpoint_dir": Path(args.out),
        "resume": args.resume,
        "progress": not args.quiet,
        "eval_data": eval_data,
    }


def write_summary(
    args: argparse.Namespace, eval_data: Any, test_accuracy: float, result: Any, **facts: Any
) -> Path:
    """Write ``DIR/summary.json`` of a training command, atomically: ``--model``, ``--dataset``,
    ``--seed``, the command's ``facts`` (its settings, ...), the test samples and accuracy,
    torch's version and ``result.to_dict()`` (values JSON cannot hold as their ``repr``)."""
    import torch

    from wrapgrad.files import atomic_write

    summary = {
        "model": args.model,
        "dataset": args.dataset,
        "seed": args.seed,
        **facts,
        "test_samples": len(eval_data[1]),
        "test_accuracy": test_accuracy,
        "torch": torch.__version__,
        "result": result.to_dict(),
    }
    return atomic_write(
        Path(args.out) / "summary.json", json.dumps(summary, indent=2, default=repr)
    )


# -- the command line ---------------------------------------------------------------------------------
def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*header).rstrip(), line.format(*("-" * w for w in widths)).rstrip()]
    out += [line.format(*r).rstrip() for r in rows]
    return "\n".join(out)


def _plugins_command(args: argparse.Namespace) -> int:
    from wrapgrad.registry import get_registry

    rows = get_registry().plugins()
    if args.kind:
        rows = [r for r in rows if r.kind == args.kind or r.broken]
    good = [r for r in rows if not r.broken]
    broken = [r for r in rows if r.broken]
    print(
        _table(
            [
                [
                    r.kind,
                    r.name,
                    r.plugin,
                    f"{r.distribution or '(in code)'} {r.version or ''}".strip(),
                    r.summary[:60] if args.verbose else "",
                ]
                for r in good
            ],
            ["kind", "name", "plugin", "distribution", "summary" if args.verbose else ""],
        )
    )
    for r in broken:
        where = f" ({r.distribution} {r.version})" if r.distribution else ""
        print(f"BROKEN plugin {r.plugin!r}{where}: {r.error}")
    print(f"\n{len(good)} components, {len(broken)} broken plugin(s)")
    return 1 if broken and args.strict else 0


class CommandParser(argparse.ArgumentParser):
    """What a command's ``factory(parser)`` is handed (:class:`~wrapgrad.records.CommandSpec`):
    the factory adds the command's arguments to it (and may set its ``description``, ``epilog``,
    ``usage`` or ``formatter_class``); :func:`add_command` then adds the sub-parser ``wrapgrad
    <name>`` with them, its help line the spec's summary."""

    def __init__(self, spec: CommandSpec, subparsers: Any) -> None:
        super().__init__(prog=f"wrapgrad {spec.name}", add_help=False)
        self.spec, self.subparsers = spec, subparsers
        self.added: argparse.ArgumentParser | None = None
        """The sub-parser a hook API 1.0-1.1 factory added itself (:meth:`add_parser`)."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """Deprecated: what a factory written for hook API 1.0-1.1 calls, having been handed the
        sub-parsers object then. Adds that sub-parser as it asks (``help``, ``aliases``,
        ``parents``, ... all honoured) and returns it; its name must be the spec's."""
        warnings.warn(
            f"wrapgrad {self.spec.name}: the command's factory called add_parser(); since hook "
            f"API 1.2 a CommandSpec factory is handed its parser (add the arguments to it; the "
            f"help texts are the spec's summary and description)",
            DeprecationWarning,
            stacklevel=2,
        )
        if name != self.spec.name or self.added is not None:
            raise WrapgradValueError(
                f"command {self.spec.name!r}: its factory added a parser named {name!r}; a "
                f"command adds one parser, named after its spec"
            )
        kwargs.setdefault("help", self.spec.summary)
        self.added = self.subparsers.add_parser(name, **kwargs)
        return self.added


def add_command(subparsers: Any, spec: CommandSpec) -> Callable[[argparse.Namespace], int]:
    """Add the sub-parser of the command ``spec`` (a :class:`~wrapgrad.records.CommandSpec`) to
    ``subparsers``: ``spec.factory`` is handed a :class:`CommandParser`, adds the arguments to
    it and returns the action, which this returns."""
    handed = CommandParser(spec, subparsers)
    action = spec.factory(handed)
    if handed.added is None:
        subparsers.add_parser(
            spec.name,
            help=spec.summary,
            description=handed.description or spec.description or spec.summary,
            epilog=handed.epilog,
            usage=handed.usage,
            formatter_class=handed.formatter_class,
            parents=[handed],
        )
    return action


def build_parser(with_plugins: bool = True) -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(
        prog="wrapgrad",
        description="Trustworthy explanations: wrap any PyTorch model and Captum method.",
    )
    parser.add_argument("--version", action="version", version=f"wrapgrad {wrapgrad.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    about = "List installed plugins and what they provide."
    p = sub.add_parser("plugins", help=about, description=about)
    p.add_argument("--kind", help="only this kind (explainer, enhancer, metric, ...)")
    p.add_argument("-v", "--verbose", action="store_true", help="show summaries")
    p.add_argument("--strict", action="store_true", help="exit 1 if a plugin is broken")
    actions: dict[str, object] = {"plugins": _plugins_command}
    if with_plugins:
        from wrapgrad.registry import get_registry

        for name, spec in get_registry().specs("command").items():
            if name in actions:
                continue
            try:
                actions[name] = add_command(sub, spec)
            except Exception as exc:  # a broken command must not take the others with it
                warnings.warn(
                    f"wrapgrad {name}: the command could not be added ({type(exc).__name__}: "
                    f"{exc}); the other commands work",
                    WrapgradWarning,
                    stacklevel=2,
                )
        # aliases (which a hook API 1.0-1.1 factory may have given its sub-parser) run its action
        canonical = {id(sub.choices[name]): name for name in actions if name in sub.choices}
        for alias, p in sub.choices.items():
            if alias not in actions and id(p) in canonical:
                actions[alias] = actions[canonical[id(p)]]
    return parser, actions


def launched_size() -> int:
    """``WORLD_SIZE`` of a torchrun launch (1 without one)."""
    from wrapgrad.distributed import launched

    return int(os.environ["WORLD_SIZE"]) if launched() else 1


@contextlib.contextmanager
def _stdout_unless(keep: bool) -> Iterator[None]:
    """Nothing, or stdout sent to ``os.devnull`` for the block."""
    if keep:
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


class Terminated(BaseException):
    """Raised in the main thread when the command receives SIGTERM (:func:`on_sigterm`): it
    unwinds like ``KeyboardInterrupt`` (``finally`` blocks run, a step's worker processes are
    terminated) and :func:`main` exits with status 143 (128 + SIGTERM)."""


#: :func:`main`'s exit status after SIGTERM (128 + the signal's number, as a shell reports it).
TERMINATED_STATUS = 128 + signal.SIGTERM


def _raise_terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills outright
    raise Terminated


@contextlib.contextmanager
def on_sigterm() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the block (in the main thread; elsewhere signal
    handlers cannot be set, and nothing changes); the previous handler is restored after it. A
    second SIGTERM while the first unwinds kills the process (its default)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        # None: a handler set outside Python, which cannot be put back; the default then.
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def main(argv: Sequence[str] | None = None) -> int:
    from wrapgrad.allocator import keep_freed_memory

    keep_freed_memory()  # this command's process only, never a library import (see the module)
    argv = list(sys.argv[1:] if argv is None else argv)
    # `--version` and `plugins` must work even when a plugin's command hook is broken.
    light = not argv or argv[0] in ("--version", "-h", "--help", "plugins")
    parser, actions = build_parser(with_plugins=not light or argv[:1] in (["-h"], ["--help"]))
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    if args.command not in actions:  # its factory raised after adding its parser (warned)
        parser.error(f"the command {args.command!r} could not be added; see the warning above")
    from wrapgrad.distributed import launched, process_group

    # SIGTERM unwinds the command as Ctrl-C does (worker processes are ended, files closed);
    # not under torchrun, which stops ranks with SIGTERM: a Python handler runs only between
    # bytecodes, so a rank blocked in a collective would ignore it until torchrun's SIGKILL.
    sigterm = contextlib.nullcontext() if launched() else on_sigterm()
    try:
        # Under torchrun (WORLD_SIZE > 1) every command runs inside the process group; ranks
        # other than 0 print nothing on stdout.
        with sigterm, process_group() as w, _stdout_unless(w.main):
            return int(actions[args.command](args) or 0)  # type: ignore[operator]
    except WrapgradError as exc:
        size = launched_size()  # the group is gone here: torchrun's environment names the rank
        where = f" (rank {os.environ.get('RANK')} of {size})" if size > 1 else ""
        print(f"wrapgrad: error{where}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Terminated:
        print("wrapgrad: terminated", file=sys.stderr)
        return TERMINATED_STATUS


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
