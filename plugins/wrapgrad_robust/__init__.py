"""Built-in plugin: robust-attribution training objectives (the FAR family), ``wrapgrad train``,
the pipeline's ``train`` step and the accuracy metrics robust models are reported with.

Objectives (``wrapgrad.train(model, data, objective=name, **options)``): ``natural``, ``pgd``
(Madry et al.), ``ig_norm`` and ``ig_sum_norm`` (Chen et al.'s RAR), ``aat`` and ``adv_aat``
(Ivankay et al.'s FAR, Eqs. 10-11), all instances of :class:`~wrapgrad_robust.objectives.
FarObjective` (FAR Eqs. 5-6). Presets for the paper's MNIST settings and for the embedded data:
:func:`~wrapgrad_robust.presets.preset`. Command: ``wrapgrad train``. Pipeline step: ``[train]``
(:mod:`wrapgrad_robust.step`). Metrics: ``natural_accuracy`` and ``pgd_accuracy``
(:mod:`wrapgrad_robust.metrics`).
"""

from __future__ import annotations

from collections.abc import Iterator

from wrapgrad import hookimpl
from wrapgrad.records import CommandSpec, MetricSpec, ObjectiveSpec, PipelineStepSpec
from wrapgrad_robust import objectives
from wrapgrad_robust.objectives import (  # noqa: F401 - exported through objectives.__all__
    FarConfig,
    FarObjective,
    aat,
    adv_aat,
    ig_norm,
    ig_sum_norm,
    natural,
    pgd,
)
from wrapgrad_robust.presets import PRESETS, preset

# the package exports the presets and everything the objectives module exports
__all__ = ["PRESETS", "preset", *objectives.__all__]

#: --smoke caps of the objectives with an inner maximisation.
_SMOKE = {"steps": 2, "ig_steps": 2}


@hookimpl
def wrapgrad_objectives() -> list[ObjectiveSpec]:
    return ObjectiveSpec.from_rows("name factory smoke summary", (
        ("natural", natural, {}, "Cross-entropy on clean inputs."),
        ("pgd", pgd, {"steps": 2},
         "Madry's PGD adversarial training (FAR Eq. 7: Eq. 6 with lambda = 0)."),
        ("ig_norm", ig_norm, _SMOKE, "RAR IG-NORM: CE + lam * max ||IG(x, x')||_1 (FAR Eq. 8)."),
        ("ig_sum_norm", ig_sum_norm, _SMOKE,
         "RAR IG-SUM-NORM: max CE(x') + beta * ||IG(x, x')||_1 (FAR Eq. 6, L1)."),
        ("aat", aat, _SMOKE, "FAR AAT: CE + lam * max PCL[IG(x~), IG(x)] by IFIA (Eq. 10)."),
        ("adv_aat", adv_aat, _SMOKE,
         "FAR AdvAAT: max CE(x~) + lam * PCL[IG(x~), IG(x)] by Adversarial IFIA (Eq. 11)."),
    ))  # fmt: skip


@hookimpl
def wrapgrad_commands() -> Iterator[CommandSpec]:
    from wrapgrad_robust.cli import add_train_command

    yield CommandSpec(
        name="train",
        factory=add_train_command,
        summary="Train a registered model with an objective (natural, pgd, ig_norm, aat, ...); "
        "write the checkpoint and a summary.",
        description="Train a registered model on a registered data set with a registered "
        "objective (wrapgrad.train), showing progress; write DIR/checkpoint.pt and "
        "DIR/summary.json.",
    )


@hookimpl
def wrapgrad_metrics() -> list[MetricSpec]:
    from wrapgrad_robust.metrics import NaturalAccuracy, PGDAccuracy

    # smoke: the caps of what a --smoke run keeps
    return MetricSpec.from_rows("name factory smoke summary", (
        ("natural_accuracy", NaturalAccuracy, {},
         "Per-sample top-1 correctness on the clean inputs (FAR's NA)."),
        ("pgd_accuracy", PGDAccuracy, {"steps": 2, "restarts": 1},
         "Per-sample correctness under a PGD attack on the cross-entropy (FAR's AA)."),
    ), higher_is_better=True, requires="model")  # fmt: skip


@hookimpl
def wrapgrad_pipeline_steps() -> Iterator[PipelineStepSpec]:
    from wrapgrad_robust.step import TrainStep, TrainTable

    yield PipelineStepSpec(
        name="train",
        factory=TrainStep,
        summary="Train every objective x seed with wrapgrad.train (one labelled model each).",
        table="train",
        schema=TrainTable,
        needs=("data",),
        provides=("models",),
    )
