"""Built-in plugin: neural SDEs with Brownian or attribution-shaped noise (Jha et al. 2022).

* state perturbers ``brownian`` (constant Σ) and ``attribution_shaped`` (``Σ · |Â(x)|``, the
  model's own normalised attribution map carried to each block), contributed as
  ``PerturberSpec(target="state")`` and used by :func:`wrapgrad.to_sde` by name;
* the command ``wrapgrad sde`` (:mod:`wrapgrad_sde.cli`): one model of the comparison trained
  in rounds with :func:`wrapgrad.sde.train_sde`;
* pipeline steps ``sde`` (the standard ResNet, the Brownian and the shaped SDE per training
  seed, :mod:`wrapgrad_sde.steps`) and ``sde_compare`` (the paper's comparison over seeds,
  :mod:`wrapgrad_sde.compare`); presets in :mod:`wrapgrad_sde.presets`.

Registered through the ``wrapgrad`` entry-point group like any third-party plugin.
"""

from __future__ import annotations

from collections.abc import Iterator

from wrapgrad import hookimpl
from wrapgrad.records import CommandSpec, PerturberSpec, PipelineStepSpec
from wrapgrad_sde.perturbers import AttributionShaped, Brownian


@hookimpl
def wrapgrad_perturbers() -> Iterator[PerturberSpec]:
    yield PerturberSpec(
        name="brownian",
        factory=Brownian,
        target="state",
        summary="Neural-SDE block noise Sigma * sqrt(dt) * xi, Sigma constant (Brownian motion).",
    )
    yield PerturberSpec(
        name="attribution_shaped",
        factory=AttributionShaped,
        target="state",
        summary="Neural-SDE block noise shaped by the model's attributions: Sigma * |A_hat| pooled to the block.",
    )


@hookimpl
def wrapgrad_commands() -> Iterator[CommandSpec]:
    from wrapgrad_sde.cli import add_sde_command

    yield CommandSpec(
        name="sde",
        factory=add_sde_command,
        summary="Train a neural SDE (Brownian or attribution-shaped noise) in rounds.",
    )


@hookimpl
def wrapgrad_pipeline_steps() -> Iterator[PipelineStepSpec]:
    from wrapgrad_sde.compare import CompareStep, CompareTable
    from wrapgrad_sde.steps import SDEStep, SDETable

    yield PipelineStepSpec(
        name="sde",
        factory=SDEStep,
        summary="Train a standard ResNet, a Brownian and an attribution-shaped neural SDE per seed.",
        table="sde",
        schema=SDETable,
        needs=("data",),
        provides=("models",),
    )
    yield PipelineStepSpec(
        name="sde_compare",
        factory=CompareStep,
        summary="The paper's comparison over training seeds: pooled columns, ordering tests, "
        "the paper's numbers, IG saturation curves.",
        table="sde_compare",
        schema=CompareTable,
        needs=("scores",),
        provides=("scores",),
    )
