"""The ``sde`` pipeline step: the paper's three models for every training seed (adds models).

``[sde]`` trains, for each seed, a standard ResNet (``sigma=0``), a Brownian neural SDE and an
attribution-shaped neural SDE from one initialisation of ``[sde].model``, with
:func:`wrapgrad.sde.train_sde` and the same options (:mod:`wrapgrad_sde.recipes`), on the
training split of ``[data].dataset`` (the evaluated samples come from ``[data].split``). Each is
added as a model labelled ``<Kind>@<seed>`` (``ResNet@0``, ``Brownian@0``, ``Shaped@0``, ...),
explained with the noise **off** (its plain network, ``sde.to_plain()``: the paper's
attributions of the trained SDE) or, with ``explain = "mc"``, as the Monte-Carlo average over
``mc_samples`` seeded draws.

Like any step from a plugin it is a plain class with a plain attrs table record; the pipeline
plugin is not imported.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import attrs

from wrapgrad.checks import check_choice, check_nonnegative, check_positive_int
from wrapgrad_sde.recipes import KINDS, LABELS

__all__ = ["SDEStep", "SDETable", "model_label"]

#: What a --smoke run keeps (the pipeline's own smoke sizes: 256 training items, tiny budgets).
SMOKE = {"limit": 256, "rounds": 2, "epochs_per_round": 1}
EXPLAIN = ("plain", "mc")


def _doc(
    value: Any = attrs.NOTHING, *, doc: str, validator: Any = None, shown: str | None = None
) -> Any:
    """A documented table field (``metadata["doc"]``; ``shown``: the default as the reference
    shows it)."""
    metadata = {"doc": doc} if shown is None else {"doc": doc, "default": shown}
    if isinstance(value, dict):
        return attrs.field(factory=lambda: dict(value), validator=validator, metadata=metadata)
    return attrs.field(default=value, validator=validator, metadata=metadata)


def _kinds(instance: Any, attribute: Any, value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError(f"{attribute.name}: expected at least one of {sorted(KINDS)}, got []")
    for v in value:
        check_choice(v, attribute.name, tuple(KINDS))
    if len(set(value)) != len(value):
        raise ValueError(f"{attribute.name}: expected distinct kinds, got {list(value)}")


def _seeds(instance: Any, attribute: Any, value: tuple[int, ...]) -> None:
    if not value or len(set(value)) != len(value):
        raise ValueError(f"{attribute.name}: expected distinct training seeds, got {list(value)}")


def _optional_positive(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None:
        check_positive_int(value, attribute.name)


def _nonnegative(instance: Any, attribute: Any, value: Any) -> None:
    check_nonnegative(value, attribute.name)


def _explain(instance: Any, attribute: Any, value: Any) -> None:
    check_choice(value, attribute.name, EXPLAIN)


def _positive(instance: Any, attribute: Any, value: Any) -> None:
    check_positive_int(value, attribute.name)


@attrs.frozen(kw_only=True)
class SDETable:
    """The paper's comparison models (Jha et al. 2022): for every seed in `seeds`, one model per
    kind in `kinds`, all initialised from that seed and trained with the same options, the same
    batches and the same budget."""

    model: str = _doc("small_resnet", doc="a registered model with residual blocks")
    kinds: tuple[str, ...] = _doc(
        ("resnet", "brownian", "shaped"),
        doc='`"resnet"` (sigma 0: the standard ResNet), `"brownian"`, `"shaped"` '
        "(attribution-shaped noise); labels `ResNet@<seed>`, `Brownian@<seed>`, `Shaped@<seed>`",
        validator=_kinds,
    )
    seeds: tuple[int, ...] = _doc(
        (0, 1), doc="training seeds (initialisation, batches, noise draws)", validator=_seeds
    )
    sigma: float = _doc(0.5, doc="the noise constant Σ (the paper's 0.5)", validator=_nonnegative)
    preset: str = _doc(
        "embedded",
        doc='options of `train_sde` (`wrapgrad_sde.presets`: `"embedded"`, `"paper"`)',
    )
    train: Mapping[str, Any] = _doc(
        {},
        doc="overrides of the preset: `rounds`, `epochs_per_round`, `patience`, "
        "`refresh_fraction`, `lr`, `batch_size`, `scheduler`, `scheduler_options`, ... (checked)",
    )
    sde: Mapping[str, Any] = _doc(
        {},
        doc="options of `wrapgrad.to_sde` (`dt`, `guide_method`, `guide_options`, "
        "`outlier_quantile`, ...; checked)",
    )
    limit: int | None = _doc(
        None,
        doc="train on the first `limit` items of the training split (default: all)",
        validator=_optional_positive,
        shown="all",
    )
    explain: str = _doc(
        "plain",
        doc='which model is explained and scored: `"plain"` (the noise off: the network '
        'itself) or `"mc"` (the Monte-Carlo average over `mc_samples` seeded draws)',
        validator=_explain,
    )
    mc_samples: int = _doc(8, doc='draws of `explain = "mc"`', validator=_positive)
    cache: bool = _doc(
        True,
        doc="keep the trained models in `$WRAPGRAD_CACHE/sde` (a second run loads them)",
    )


def model_label(kind: str, seed: int) -> str:
    """The label of the model of ``kind`` and ``seed`` (``"Shaped@1"``)."""
    return f"{LABELS[kind]}@{seed}"


def _known_train_options() -> set[str]:
    from wrapgrad.options import accepted
    from wrapgrad.sde import RoundsConfig
    from wrapgrad.training import train

    loop = set(accepted(train)[0])
    own = {"model", "data", "objective", "on_epoch_end", "registry", "epochs"}
    managed = {"checkpoint_dir", "resume", "progress", "eval_data"}
    return (loop - own - managed) | {f.name for f in attrs.fields(RoundsConfig)}


def _known_sde_options() -> set[str]:
    from wrapgrad.registry import get_registry
    from wrapgrad.sde import SDEConfig

    names = {f.name for f in attrs.fields(SDEConfig)} - {"noise", "blocks"}
    for kind in KINDS.values():
        names |= get_registry().get("perturber", kind["noise"]).option_names()[0]
    return names - {"sigma"}


class SDEStep:
    """Trains the comparison's models and adds them to the run."""

    def check(self, table: SDETable, plan: Any) -> SDETable:
        from wrapgrad_sde.presets import PRESETS

        spec = plan.component("model", table.model, "[sde].model")
        if table.preset not in PRESETS:
            raise plan.unknown("[sde].preset", table.preset, PRESETS, "preset")
        for field, options, known in (
            ("train", table.train, _known_train_options()),
            ("sde", table.sde, _known_sde_options()),
        ):
            for key in options:
                if key not in known:
                    raise plan.unknown(f"[sde].{field}.{key}", key, known, f"{field} option")
        for kind in table.kinds:
            for seed in table.seeds:
                plan.add_model(model_label(kind, seed), "[sde].kinds")
        return attrs.evolve(table, model=spec.name)

    def shrink(self, table: SDETable) -> SDETable:
        train = {**dict(table.train), "rounds": SMOKE["rounds"]}
        train["epochs_per_round"] = SMOKE["epochs_per_round"]
        limit = SMOKE["limit"] if table.limit is None else min(table.limit, SMOKE["limit"])
        return attrs.evolve(
            table,
            seeds=table.seeds[:1],
            train=train,
            limit=limit,
            mc_samples=min(2, table.mc_samples),
        )

    def outputs(self, table: SDETable) -> tuple[str, ...]:
        return ()

    def run(self, table: SDETable, context: Any) -> None:
        from wrapgrad.catalog import load_dataset
        from wrapgrad.training import accuracy
        from wrapgrad_sde.presets import preset
        from wrapgrad_sde.recipes import build_model, train_kind

        data_table = context.tables["data"]
        extra = dict(data_table.options)
        if table.limit is not None:
            extra["limit"] = table.limit
        # the train part of the split the run evaluates on ([data].split_seed, resolved by the
        # data step): no evaluated item is a training item
        split_seed = 0 if data_table.split_seed is None else int(data_table.split_seed)
        train_set = load_dataset(data_table.dataset, split="train", seed=split_seed, **extra)
        x, y = train_set.inputs, train_set.labels
        options = {**preset(table.preset), **dict(table.train)}
        description = {
            "model": table.model,
            "dataset": data_table.dataset,
            "data_seed": split_seed,
            "data_options": extra,
            "items": len(y),
        }
        evaluated = context.data.dataset
        summary: dict[str, Any] = {
            "preset": table.preset,
            "options": options,
            "sigma": table.sigma,
            "train_items": len(y),
            "explain": table.explain,
            "models": {},
        }
        started = time.perf_counter()
        for kind in table.kinds:
            for seed in table.seeds:
                init = build_model(
                    table.model, x.shape[1], train_set.num_classes, seed
                )  # one initialisation per seed, shared by every kind (to_sde copies it)
                run = train_kind(
                    kind,
                    init,
                    (x, y),
                    seed=seed,
                    sigma=table.sigma,
                    sde_options=table.sde,
                    train_options=options,
                    description=description,
                    cache=table.cache,
                    progress=context.progress,
                )
                sde = run.sde.eval()
                if table.explain == "mc":
                    sde.mc_samples = table.mc_samples
                    explained, how = sde, f"Monte-Carlo average of {table.mc_samples} draws"
                else:
                    explained, how = sde.to_plain().eval(), "noise off (the plain network)"
                result = run.result
                label = model_label(kind, seed)
                info = {
                    "name": table.model,
                    "kind": kind,
                    "kind_label": LABELS[kind],
                    "seed": seed,
                    "split_seed": split_seed,
                    "noise": KINDS[kind]["noise"],
                    "sigma": 0.0 if kind == "resnet" else table.sigma,
                    "source": "cached (train_sde)" if run.cached else "trained (train_sde)",
                    "explained": how,
                    "epochs": len(result.train.history),
                    "rounds": len(result.rounds),
                    "stopped": result.stopped,
                    "train_seconds": round(result.train_seconds, 3),
                    "refresh_seconds": round(result.refresh_seconds, 3),
                    "final_loss": result.train.history[-1].loss,
                    "test_accuracy": accuracy(explained, evaluated.inputs, evaluated.labels),
                    "accuracy_on": f"{data_table.dataset} {data_table.split} "
                    f"({len(evaluated)} items)",
                }
                summary["models"][label] = {
                    **info,
                    "history": [r.to_dict() for r in result.train.history],
                    "round_log": [r.to_dict() for r in result.rounds],
                }
                context.add_model(label, explained, info)
        summary["seconds"] = round(time.perf_counter() - started, 3)
        context.results["sde"] = summary
        context.results["seeds"]["sde"] = list(table.seeds)
