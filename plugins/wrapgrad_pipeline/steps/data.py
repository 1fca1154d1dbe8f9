"""The ``data`` step: load the data set and keep the evaluated samples (provides ``"data"``).

The split is the one the run's models were trained on: its seed (``[data].split_seed``) is the
model recipe's ``data_seed`` that the model step declares, never the pipeline seed, so a changed
``[pipeline].seed`` cannot put training items among the evaluated or held-out ones. The
pipeline (sampling) seed ``[data].seed`` picks which items of that split are evaluated: a seeded
random order, whose first ``samples`` items are evaluated and the next ones held out for
calibration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch

from wrapgrad.checks import check_choice, check_positive_int
from wrapgrad_pipeline.context import EvalData, RunContext
from wrapgrad_pipeline.plan import Plan
from wrapgrad_pipeline.schema import checked, setting
from wrapgrad_pipeline.smoke import SIZES

__all__ = ["SPLITS", "DataStep", "DataTable"]

SPLITS = ("train", "test", "all")


@attrs.frozen(kw_only=True)
class DataTable:
    """The data set. The split is the one the models were trained on (`split_seed`); `samples`
    items of it, chosen at random with `seed`, are explained and evaluated, and calibrations take
    their held-out items from the rest."""

    dataset: str = setting(
        doc="a registered data set (`mnist`, `digits8x8`, `cmnist`, ...; "
        "`wrapgrad plugins --kind dataset`)"
    )
    split: str = setting(
        "test", doc='`"train"`, `"test"` or `"all"`', validator=checked(check_choice, SPLITS)
    )
    samples: int = setting(
        128,
        type="integer ≥ 1",
        doc="items of the split explained and evaluated (all, if the split is smaller)",
        validator=checked(check_positive_int),
    )
    seed: int | None = setting(
        None,
        default_doc="`[pipeline].seed`",
        doc="the sampling seed: the random order of the split's items whose first `samples` "
        "are evaluated and the next ones held out for calibration",
    )
    split_seed: int | None = setting(
        None,
        default_doc="the models' (their recipe's `data_seed`), else 0",
        doc="the data set's own seed (its train/test split and its random choices); it must "
        "be the one the models were trained on, so a different one is refused for the "
        '`"test"` split',
    )
    options: Mapping[str, Any] = setting(
        factory=dict,
        doc="further keyword arguments of the data set's factory (checked against its options)",
    )


class DataStep:
    """Loads ``[data].dataset`` through the registry (:func:`wrapgrad.load_dataset`)."""

    def check(self, table: DataTable, plan: Plan) -> DataTable:
        spec = plan.component("dataset", table.dataset, "[data].dataset")
        for key, instead in (("split", "split"), ("seed", "split_seed")):
            if key in table.options:
                raise plan.fail(f"[data].options.{key}", f"expected [data].{instead} instead")
        plan.check_options(spec, table.options, "[data].options")
        seed = plan.seed if table.seed is None else table.seed
        return attrs.evolve(table, dataset=spec.name, seed=seed)

    def finish(self, table: DataTable, plan: Plan) -> DataTable:
        """The split seed the models declared (:meth:`Plan.add_model`): one for all of them, and
        ``[data].split_seed`` if given must be it (for the test split)."""
        declared = dict(plan.split_seeds.values())
        if len(declared) > 1:
            (a, fa), (b, fb) = sorted(declared.items())[:2]
            raise plan.fail(
                fb,
                f"expected models trained on one train/test split, got split seed {a} ({fa}) "
                f"and {b}: the test split of one holds training items of the other",
            )
        if not declared:
            return attrs.evolve(
                table, split_seed=0 if table.split_seed is None else table.split_seed
            )
        ((seed, field),) = declared.items()
        if table.split_seed is not None and table.split_seed != seed and table.split == "test":
            raise plan.fail(
                "[data].split_seed",
                f"expected {seed}, the split seed the model was trained on ({field}), got "
                f"{table.split_seed}: that test split would hold training items",
            )
        return attrs.evolve(
            table, split_seed=seed if table.split_seed is None else table.split_seed
        )

    def shrink(self, table: DataTable) -> DataTable:
        return attrs.evolve(table, samples=min(table.samples, SIZES["samples"]))

    def outputs(self, table: DataTable) -> tuple[str, ...]:
        return ()

    def run(self, table: DataTable, context: RunContext) -> None:
        from wrapgrad.catalog import load_dataset

        split_seed = 0 if table.split_seed is None else table.split_seed
        dataset = load_dataset(table.dataset, split=table.split, seed=split_seed, **table.options)
        known = sorted(getattr(dataset, "masks", {}) or {})
        for mask, field in context.config.masks.items():
            if mask not in known:
                # Known only now for data sets that do not declare their masks: still before
                # any training.
                raise context.fail(
                    field, f"expected one of the data set's masks {known}, got {mask!r}"
                )
        n = min(table.samples, len(dataset))
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(table.seed))
        items = order[:n]
        context.data = EvalData(
            dataset=dataset,
            inputs=dataset.inputs[items],
            labels=dataset.labels[items],
            masks={k: v[items] for k, v in (getattr(dataset, "masks", {}) or {}).items()},
            order=order,
        )
        context.results["seeds"]["data"] = table.seed
        context.results["seeds"]["split"] = split_seed
        context.results["data"] = {
            "dataset": table.dataset,
            "split": table.split,
            "samples": n,
            "seed": table.seed,
            "split_seed": split_seed,
            "split_size": len(dataset),
            "options": dict(table.options),
            "items": items.tolist(),
            "labels": context.data.labels.tolist(),
        }
