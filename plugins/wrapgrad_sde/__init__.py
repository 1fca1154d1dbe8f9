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
def wrapgrad_perturbers() -> list[PerturberSpec]:
    # both perturb the state of a neural SDE's blocks
    return PerturberSpec.from_rows("name factory summary", (
        ("brownian", Brownian,
         "Neural-SDE block noise Sigma * sqrt(dt) * xi, Sigma constant (Brownian motion)."),
        ("attribution_shaped", AttributionShaped,
         "Neural-SDE block noise shaped by the model's attributions: Sigma * |A_hat| pooled to "
         "the block."),
    ), target="state")  # fmt: skip


@hookimpl
def wrapgrad_commands() -> Iterator[CommandSpec]:
    from wrapgrad_sde.cli import add_sde_command

    yield CommandSpec(
        name="sde",
        factory=add_sde_command,
        summary="Train a neural SDE (Brownian or attribution-shaped noise) or its ResNet "
        "baseline in rounds.",
        description="Convert a registered model to a neural SDE (wrapgrad.to_sde) and train it "
        "in rounds (train, recompute the attribution maps, reshape the noise: Jha et al. 2022, "
        "Figure 2) with wrapgrad.sde.train_sde; write DIR/checkpoint.pt, DIR/model.pt and "
        "DIR/summary.json.",
    )


@hookimpl
def wrapgrad_pipeline_steps() -> list[PipelineStepSpec]:
    from wrapgrad_sde.compare import CompareStep, CompareTable
    from wrapgrad_sde.steps import SDEStep, SDETable

    # each step's table is named as the step
    return PipelineStepSpec.from_rows("name table factory schema needs provides summary", (
        ("sde", "sde", SDEStep, SDETable, ("data",), ("models",),
         "Train a standard ResNet, a Brownian and an attribution-shaped neural SDE per seed."),
        ("sde_compare", "sde_compare", CompareStep, CompareTable, ("scores",), ("scores",),
         "The paper's comparison over training seeds: pooled columns, ordering tests, the "
         "paper's numbers, IG saturation curves."),
    ))  # fmt: skip
