"""Built-in plugin: the ``wrapgrad run`` and ``wrapgrad report`` commands.

``wrapgrad run FILE [--out DIR] [--smoke] [--quiet] [--check]`` validates a pipeline file (see
``docs/pipeline-reference.md``), runs it and prints where the report is; ``wrapgrad report DIR``
prints a finished run's report again, rendered from its ``results.json``.
"""

from __future__ import annotations

from collections.abc import Iterator

from wrapgrad import hookimpl
from wrapgrad.records import CommandSpec
from wrapgrad_pipeline.commands import add_report_command, add_run_command

__all__ = ["add_report_command", "add_run_command"]


@hookimpl
def wrapgrad_commands() -> Iterator[CommandSpec]:
    yield CommandSpec(
        name="run",
        factory=add_run_command,
        summary="Validate and run a pipeline file; write report.md, results.json and figures.",
    )
    yield CommandSpec(
        name="report",
        factory=add_report_command,
        summary="Print a finished run's report again (rendered from its results.json).",
    )
