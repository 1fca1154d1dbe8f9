"""The ``wrapgrad`` command line.

``wrapgrad plugins`` and ``wrapgrad --version`` live here; every other subcommand comes from a
plugin's ``wrapgrad_commands`` hook (see :mod:`wrapgrad.hookspecs`), built-ins included.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence

import wrapgrad
from wrapgrad.errors import WrapgradError


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


def build_parser(with_plugins: bool = True) -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(
        prog="wrapgrad",
        description="Trustworthy explanations: wrap any PyTorch model and Captum method.",
    )
    parser.add_argument("--version", action="version", version=f"wrapgrad {wrapgrad.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("plugins", help="list installed plugins and what they provide")
    p.add_argument("--kind", help="only this kind (explainer, enhancer, metric, ...)")
    p.add_argument("-v", "--verbose", action="store_true", help="show summaries")
    p.add_argument("--strict", action="store_true", help="exit 1 if a plugin is broken")
    actions: dict[str, object] = {"plugins": _plugins_command}
    if with_plugins:
        from wrapgrad.registry import get_registry

        for name, spec in get_registry().specs("command").items():
            if name in actions:
                continue
            actions[name] = spec.factory(sub)
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `--version` and `plugins` must work even when a plugin's command hook is broken.
    light = not argv or argv[0] in ("--version", "-h", "--help", "plugins")
    parser, actions = build_parser(with_plugins=not light or argv[:1] in (["-h"], ["--help"]))
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    from wrapgrad.distributed import process_group

    try:
        # Under torchrun (WORLD_SIZE > 1) every command runs inside the process group; ranks
        # other than 0 print nothing on stdout.
        with process_group() as w, _stdout_unless(w.main):
            return int(actions[args.command](args) or 0)  # type: ignore[operator]
    except WrapgradError as exc:
        size = launched_size()  # the group is gone here: torchrun's environment names the rank
        where = f" (rank {os.environ.get('RANK')} of {size})" if size > 1 else ""
        print(f"wrapgrad: error{where}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
