"""The ``model`` step: a reference model trained with its recipe, or loaded (adds a model)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch

from wrapgrad.errors import WrapgradValueError
from wrapgrad_pipeline.context import RunContext
from wrapgrad_pipeline.plan import Plan
from wrapgrad_pipeline.schema import setting
from wrapgrad_pipeline.smoke import SIZES

__all__ = ["ModelStep", "ModelTable", "accuracy"]


@attrs.frozen(kw_only=True)
class ModelTable:
    """A registered model, trained with its recipe on `[data].dataset` the first time and loaded
    from the cache (`$WRAPGRAD_CACHE`, else `~/.cache/wrapgrad`) afterwards, or loaded from a
    state-dict file (`weights`). A recipe-trained model is evaluated on the held-out part of the
    split its recipe trained on (`data_seed`, default 0), whatever the pipeline seed; for
    `weights`, say the split with `[data].split_seed`."""

    name: str = setting(doc="a registered model (`small_cnn`, `small_resnet`)")
    label: str | None = setting(
        None,
        default_doc="its name",
        doc="the model's label in the report where several models are scored (e.g. beside "
        "models a training step adds)",
    )
    seed: int | None = setting(None, default_doc="`[pipeline].seed`", doc="training seed")
    recipe: Mapping[str, Any] = setting(
        factory=dict,
        doc="overrides of the training recipe (`epochs`, `lr`, `batch_size`, `weight_decay`, "
        "`dataset_options`, ...; checked)",
    )
    weights: str | None = setting(
        None,
        doc="a state-dict file (relative to the pipeline file) to load, read with "
        "`torch.load(weights_only=True)`, instead of training; the model is built with "
        "`recipe.model_options` where given (e.g. `{ blocks = 2 }` for a two-block "
        "`small_resnet`)",
    )
    fold_batchnorm: bool = setting(
        False,
        doc="evaluate the model with each eval-mode BatchNorm folded into the convolution "
        "before it, at every forward pass (`wrapgrad.fold_batchnorm`): the same function up to "
        "float rounding, with the model's own parameters under their names (weight noise is "
        "applied before the fold); on the three-block `small_resnet` the demo's explain step "
        "took about 0.85x the time. Needs a forward pass `torch.fx` can trace. The test "
        "accuracy is the unfolded model's",
    )


def accuracy(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of ``inputs`` the model classifies as ``labels`` (in eval mode, no gradients)."""
    with torch.no_grad():
        pred = torch.cat([model(xb).argmax(1) for xb in inputs.split(256)])
    return float((pred == labels).float().mean())


class ModelStep:
    """Trains (or loads from the cache) ``[model].name`` through :func:`wrapgrad.pretrained`."""

    def check(self, table: ModelTable, plan: Plan) -> ModelTable:

        spec = plan.component("model", table.name, "[model].name")
        dataset = plan.tables["data"].dataset
        if table.weights is None and spec.pretrained is None:
            raise plan.fail(
                "[model].weights",
                f"missing; the model {spec.name!r} has no training recipes, so a state-dict "
                f"file is needed",
            )
        options = _model_options(table.recipe)
        plan.check_options(spec, options, "[model].recipe.model_options")
        _check_model_values(spec, options, plan)
        split_seed = None
        if table.weights is None and getattr(spec, "recipe", None) is not None:
            record = plan.recipe(spec.name, dataset, table.recipe, "[model].recipe")
            # The split the recipe trains on: the data step evaluates its held-out part.
            split_seed = getattr(record, "data_seed", None)
        label = table.label or spec.name
        plan.add_model(
            label, "[model].label", split_seed=split_seed, split_field="[model].recipe.data_seed"
        )
        seed = plan.seed if table.seed is None else table.seed
        return attrs.evolve(table, name=spec.name, label=label, seed=seed)

    def shrink(self, table: ModelTable) -> ModelTable:
        recipe = dict(table.recipe)
        recipe["epochs"] = SIZES["epochs"]
        recipe["dataset_options"] = {
            **dict(recipe.get("dataset_options", {})),
            "limit": SIZES["train_items"],
        }
        return attrs.evolve(table, recipe=recipe)

    def outputs(self, table: ModelTable) -> tuple[str, ...]:
        return ()

    def run(self, table: ModelTable, context: RunContext) -> None:
        from wrapgrad.catalog import pretrained
        from wrapgrad.registry import get_registry

        data = context.data
        info: dict[str, Any] = {
            "name": table.name,
            "seed": table.seed,
            "recipe": dict(table.recipe),
        }
        if table.weights is not None:
            path = (context.source_dir / table.weights).resolve()
            factory = get_registry().get("model", table.name).factory
            model = factory(
                in_channels=int(data.inputs.shape[1]),
                num_classes=int(data.dataset.num_classes),
                **_model_options(table.recipe),
            )
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                model.load_state_dict(state, strict=True)
            except Exception as exc:
                raise context.fail(
                    "[model].weights", f"cannot load a state dict from {str(path)!r}: {exc}"
                ) from None
            info["source"] = f"weights {table.weights}"
        else:
            model = pretrained(
                table.name,
                context.tables["data"].dataset,
                seed=table.seed,
                progress=context.progress,
                **dict(table.recipe),
            )
            info["source"] = "recipe-trained, cached"
        model.eval()
        info["parameters"] = sum(p.numel() for p in model.parameters())
        info["split_seed"] = context.tables["data"].split_seed
        info["test_accuracy"] = accuracy(model, data.dataset.inputs, data.dataset.labels)
        data_table = context.tables["data"]
        info["accuracy_on"] = f"{data_table.dataset} {data_table.split} ({len(data.dataset)} items)"
        if table.fold_batchnorm:
            from wrapgrad.folding import fold_batchnorm

            try:
                model = fold_batchnorm(model)
            except WrapgradValueError as exc:
                raise context.fail("[model].fold_batchnorm", str(exc)) from None
            info["folded_batchnorm"] = len(model.pairs)
        context.add_model(table.label or table.name, model, info)
        context.results["seeds"]["model"] = table.seed


def _check_model_values(spec: Any, options: dict[str, Any], plan: Plan) -> None:
    """Build the model with ``options`` on the meta device (no memory, no weights), so that a
    value its factory refuses (``{ blocks = 4 }``) fails the check, not the training. A factory
    that cannot build on the meta device for another reason is checked when it is built."""
    from wrapgrad.errors import WrapgradError

    if not options:
        return
    try:
        with torch.device("meta"):
            spec.factory(**options)
    except WrapgradError as exc:
        raise plan.fail("[model].recipe.model_options", str(exc)) from None
    except Exception:  # not the options' fault: the build will say what is wrong
        pass


def _model_options(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The model factory's keyword arguments a ``[model].recipe`` gives (``model_options``)."""
    return dict(dict(recipe).get("model_options") or {})
