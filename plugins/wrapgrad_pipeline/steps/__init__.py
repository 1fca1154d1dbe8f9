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

    yield PipelineStepSpec(
        name="data",
        factory=DataStep,
        summary="Load a registered data set; keep the evaluated samples.",
        table="data",
        schema=DataTable,
        provides=("data",),
    )
    yield PipelineStepSpec(
        name="model",
        factory=ModelStep,
        summary="A reference model trained with its recipe (cached), or loaded from weights.",
        table="model",
        schema=ModelTable,
        needs=("data",),
        provides=("models",),
    )
    yield PipelineStepSpec(
        name="calibration",
        factory=CalibrationStep,
        summary="Noise levels by relative accuracy drop, for every model.",
        table="calibration",
        schema=CalibrationTable,
        named=True,
        always=True,
        needs=("data", "models"),
        provides=("levels",),
    )
    yield PipelineStepSpec(
        name="explain",
        factory=ExplainStep,
        summary="Explain the samples with every method and (model, enhancer) variant.",
        table="explain",
        schema=ExplainTable,
        needs=("data", "models", "levels"),
        provides=("explanations",),
    )
    yield PipelineStepSpec(
        name="evaluate",
        factory=EvaluateStep,
        summary="Score every method and variant with metrics and attacks.",
        table="evaluate",
        schema=EvaluateTable,
        always=True,
        needs=("explanations",),
        provides=("scores",),
    )
    yield PipelineStepSpec(
        name="sweep",
        factory=SweepStep,
        summary="A mask metric of enhanced maps against the accuracy drop of the noise level.",
        table="sweep",
        schema=SweepTable,
        needs=("data", "models", "levels", "explanations"),
        provides=("sweep",),
    )
    yield PipelineStepSpec(
        name="report",
        factory=ReportStep,
        summary="Write figures, results.json and report.md (rendered from it).",
        table="report",
        schema=ReportTable,
        always=True,
        needs=("scores",),
    )
