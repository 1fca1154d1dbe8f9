"""The ``data`` step: load the data set and keep the evaluated samples (provides ``"data"``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from wrapgrad.checks import check_choice, check_positive_int
from wrapgrad_pipeline.context import EvalData, RunContext
from wrapgrad_pipeline.plan import Plan
from wrapgrad_pipeline.schema import checked, setting
from wrapgrad_pipeline.smoke import SIZES

__all__ = ["SPLITS", "DataStep", "DataTable"]

SPLITS = ("train", "test", "all")


@attrs.frozen(kw_only=True)
class DataTable:
    """The data set; its first `samples` items of `split` are explained and evaluated."""

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
        doc="the first `samples` items of the split are explained and evaluated",
        validator=checked(check_positive_int),
    )
    seed: int | None = setting(
        None,
        default_doc="`[pipeline].seed`",
        doc="the data set's seed (split and random choices)",
    )
    options: Mapping[str, Any] = setting(
        factory=dict,
        doc="further keyword arguments of the data set's factory (checked against its options)",
    )


class DataStep:
    """Loads ``[data].dataset`` through the registry (:func:`wrapgrad.load_dataset`)."""

    def check(self, table: DataTable, plan: Plan) -> DataTable:
        spec = plan.component("dataset", table.dataset, "[data].dataset")
        for key in ("split", "seed"):
            if key in table.options:
                raise plan.fail(f"[data].options.{key}", f"expected [data].{key} instead")
        plan.check_options(spec, table.options, "[data].options")
        seed = plan.seed if table.seed is None else table.seed
        return attrs.evolve(table, dataset=spec.name, seed=seed)

    def shrink(self, table: DataTable) -> DataTable:
        return attrs.evolve(table, samples=min(table.samples, SIZES["samples"]))

    def outputs(self, table: DataTable) -> tuple[str, ...]:
        return ()

    def run(self, table: DataTable, context: RunContext) -> None:
        from wrapgrad.catalog import load_dataset

        dataset = load_dataset(table.dataset, split=table.split, seed=table.seed, **table.options)
        known = sorted(getattr(dataset, "masks", {}) or {})
        for mask, field in context.config.masks.items():
            if mask not in known:
                # Known only now for data sets that do not declare their masks: still before
                # any training.
                raise context.fail(
                    field, f"expected one of the data set's masks {known}, got {mask!r}"
                )
        n = min(table.samples, len(dataset))
        context.data = EvalData(
            dataset=dataset,
            inputs=dataset.inputs[:n],
            labels=dataset.labels[:n],
            masks={k: v[:n] for k, v in (getattr(dataset, "masks", {}) or {}).items()},
        )
        context.results["seeds"]["data"] = table.seed
        context.results["data"] = {
            "dataset": table.dataset,
            "split": table.split,
            "samples": n,
            "seed": table.seed,
            "options": dict(table.options),
            "labels": context.data.labels.tolist(),
        }
