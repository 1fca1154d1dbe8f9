"""Built-in plugin: pipelines, their steps, reports, and the ``wrapgrad run`` / ``wrapgrad report``
commands.

``wrapgrad run FILE [--out DIR] [--smoke] [--quiet] [--check]`` validates a pipeline file (see
``docs/pipeline-reference.md``), runs it and prints where the report is; ``wrapgrad report DIR``
prints a finished run's report again, rendered from its ``results.json``. In Python::

    from wrapgrad_pipeline import Pipeline
    run = Pipeline.from_file("examples/noisegrad_cmnist.toml").run("runs/cmnist", smoke=True)

The runner knows no step: the built-in ones (data, model, calibration, explain, evaluate, report;
:mod:`wrapgrad_pipeline.steps`) come from this plugin's ``wrapgrad_pipeline_steps`` hook, exactly
as another plugin's steps do.
"""

from __future__ import annotations

from collections.abc import Iterator

from wrapgrad import hookimpl
from wrapgrad.records import CommandSpec, PipelineStepSpec
from wrapgrad_pipeline.commands import add_report_command, add_run_command
from wrapgrad_pipeline.report import load_results, render_markdown
from wrapgrad_pipeline.runner import Pipeline, PipelineRun, shrink
from wrapgrad_pipeline.steps import specs

__all__ = ["Pipeline", "PipelineRun", "load_results", "render_markdown", "shrink"]


@hookimpl
def wrapgrad_commands() -> list[CommandSpec]:
    return CommandSpec.from_rows("name factory summary description", (
        ("run", add_run_command,
         "Validate and run a pipeline file; write report.md, results.json and figures.",
         "Validate a pipeline file as a whole, run it and write report.md, results.json and PNG "
         "figures into the output directory."),
        ("report", add_report_command,
         "Print a finished run's report again (rendered from its results.json).", None),
    ))  # fmt: skip


@hookimpl
def wrapgrad_pipeline_steps() -> Iterator[PipelineStepSpec]:
    yield from specs()
