"""The built-in pipeline steps, yielded by this plugin's ``wrapgrad_pipeline_steps`` hook exactly
as another plugin yields its own (a ``train`` step adding models, for example).

| step | table | needs | provides |
| --- | --- | --- | --- |
| ``data`` | ``[data]`` | | ``data`` |
| ``model`` | ``[model]`` | ``data`` | ``models`` |
| ``calibration`` | ``[calibration.<name>]`` (always) | ``data``, ``models`` | ``levels`` |
| ``explain`` | ``[explain]`` | ``data``, ``models``, ``levels`` | ``explanations`` |
| ``evaluate`` | ``[evaluate]`` (always) | ``explanations`` | ``scores`` |
| ``sweep`` | ``[sweep]`` | ``data``, ``models``, ``levels``, ``explanations`` | ``sweep`` |
| ``report`` | ``[report]`` (always) | ``scores`` | |
"""

from __future__ import annotations

from collections.abc import Iterator

from wrapgrad.records import PipelineStepSpec

__all__ = ["specs"]


def specs() -> Iterator[PipelineStepSpec]:
    from wrapgrad_pipeline.steps.calibration import CalibrationStep, CalibrationTable
    from wrapgrad_pipeline.steps.data import DataStep, DataTable
    from wrapgrad_pipeline.steps.evaluate import EvaluateStep, EvaluateTable
    from wrapgrad_pipeline.steps.explain import ExplainStep, ExplainTable
    from wrapgrad_pipeline.steps.model import ModelStep, ModelTable
    from wrapgrad_pipeline.steps.report import ReportStep, ReportTable
    from wrapgrad_pipeline.steps.sweep import SweepStep, SweepTable

    # name (= its table), step, schema, needs, provides, flags, summary (the docstring's table)
    table = (
        ("data", DataStep, DataTable, (), ("data",), {},
         "Load a registered data set; keep the evaluated samples."),
        ("model", ModelStep, ModelTable, ("data",), ("models",), {},
         "A reference model trained with its recipe (cached), or loaded from weights."),
        ("calibration", CalibrationStep, CalibrationTable, ("data", "models"), ("levels",),
         {"named": True, "always": True},
         "Noise levels by relative accuracy drop, for every model."),
        ("explain", ExplainStep, ExplainTable, ("data", "models", "levels"), ("explanations",), {},
         "Explain the samples with every method and (model, enhancer) variant."),
        ("evaluate", EvaluateStep, EvaluateTable, ("explanations",), ("scores",), {"always": True},
         "Score every method and variant with metrics and attacks."),
        ("sweep", SweepStep, SweepTable, ("data", "models", "levels", "explanations"), ("sweep",),
         {}, "A mask metric of enhanced maps against the accuracy drop of the noise level."),
        ("report", ReportStep, ReportTable, ("scores",), (), {"always": True},
         "Write figures, results.json and report.md (rendered from it)."),
    )  # fmt: skip
    for name, factory, schema, needs, provides, flags, summary in table:
        yield PipelineStepSpec(
            name=name,
            factory=factory,
            summary=summary,
            table=name,
            schema=schema,
            needs=needs,
            provides=provides,
            **flags,
        )
