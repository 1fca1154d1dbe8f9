"""Any Quantus metric on torch tensors with a wrapgrad ``explain``, and as a registered metric.

:func:`quantus_metric` builds a Quantus metric by name and returns a :class:`QuantusMetric`:
``metric(model, inputs, target, explain, **call_kwargs)`` gives one score per sample (curves
and per-layer scores reduced as :mod:`wrapgrad_quantus.reductions` documents;
``metric.raw(...)`` returns Quantus' own result). Every Quantus metric class is also a
registered wrapgrad metric, ``quantus_<snake case>`` (``quantus_max_sensitivity``,
``quantus_relevance_rank_accuracy``, ...; :func:`metric_specs`): the localisation metrics follow
wrapgrad's mask form ``m(attributions, mask)``, Focus the mosaic form ``m(model, mosaics,
target, explain, positions)``, the others the model form ``m(model, inputs, target, explain)``,
and each declares its score direction and its ``--smoke`` caps, so ``wrapgrad.metric(...)`` and
pipelines use them like any other metric. A metric that gives no score per sample
(:data:`NOT_PER_SAMPLE`) is declared unavailable under its registered name, with the reason.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from wrapgrad.captum_adapter import snake_case
from wrapgrad.checks import check_seed
from wrapgrad.errors import UnknownNameError, WrapgradTypeError, WrapgradValueError
from wrapgrad.functional import model_device
from wrapgrad.options import accepted
from wrapgrad.records import MetricSpec, normalize_name
from wrapgrad_quantus.explain import (
    explain_func_from,
    quantus_explain,
    reduce_map,
    to_numpy_map,
    to_tensor,
)
from wrapgrad_quantus.faithfulness import planned
from wrapgrad_quantus.fixes import fixed
from wrapgrad_quantus.memo import MemoModel
from wrapgrad_quantus.reductions import REDUCTIONS
from wrapgrad_quantus.rng import isolated

__all__ = [
    "MOSAIC",
    "NOT_PER_SAMPLE",
    "PREFIX",
    "SMOKE_CAPS",
    "QuantusMaskMetric",
    "QuantusMetric",
    "QuantusMosaicMetric",
    "metric_name",
    "metric_specs",
    "quantus_metric",
    "quantus_metrics",
]

#: Registered names of Quantus metrics: ``PREFIX + snake case`` of the class name.
PREFIX = "quantus_"

#: What ``--smoke`` keeps of a Quantus metric's sizes (each metric declares the ones it takes).
SMOKE_CAPS: dict[str, int] = {
    "nr_samples": 2,
    "nr_runs": 2,
    "subset_size": 16,
    "nr_steps": 4,
    "n_perturb_samples": 2,
    "regions_evaluation": 4,
}

#: Options of :class:`QuantusMetric` itself, beside the Quantus class's own.
_OWN_OPTIONS = ("seed", "batch_size", "share_predictions")

#: Quantus metrics that give no score per sample, with the reason: not offered as registered
#: metrics (their names raise :class:`~wrapgrad.errors.UnavailableError` with it);
#: ``quantus_metric(name).raw(...)`` still returns Quantus' result.
NOT_PER_SAMPLE: dict[str, str] = {
    "SensitivityN": (
        "Quantus' SensitivityN gives no score per sample: for each number n of features "
        "removed (in the order of the attributions) it returns one Pearson correlation across "
        "the samples of the batch, of the output drops with the attributions removed at step "
        "n (Ancona et al. 2018 draw random subsets of n features and report the correlation "
        "averaged over samples). For Quantus' correlations per n use "
        "wrapgrad_quantus.quantus_metric('SensitivityN').raw(model, inputs, target, explain)"
    ),
}

#: Quantus metrics scored on 2x2 mosaics, with the positions of the target class's tiles as
#: ``custom_batch`` (the metric form ``"mosaic"``).
MOSAIC = ("Focus",)


def _key(name: str) -> str:
    """A Quantus name (class name, snake case, display name) as lower snake case."""
    return normalize_name("".join(c if c.isalnum() else "_" for c in snake_case(name)))


def metric_name(cls_name: str) -> str:
    """The registered name of the Quantus metric class ``cls_name``: ``"MaxSensitivity"`` ->
    ``"quantus_max_sensitivity"``."""
    return PREFIX + _key(cls_name)


@functools.lru_cache(maxsize=1)
def quantus_metrics() -> dict[str, type]:
    """Every Quantus metric class by class name (``"MaxSensitivity"``, ``"MPRT"``, ...)."""
    import quantus

    base = quantus.Metric
    out: dict[str, type] = {}
    for attr in dir(quantus):
        obj = getattr(quantus, attr)
        if inspect.isclass(obj) and issubclass(obj, base) and obj is not base:
            out[attr] = obj
    return out


def _resolve(name: str) -> type:
    import quantus

    classes = quantus_metrics()
    aliases: dict[str, str] = {}
    for cls_name in classes:
        aliases[_key(cls_name)] = cls_name
    for group in getattr(quantus, "AVAILABLE_METRICS", {}).values():
        for display, cls in group.items():
            for cls_name, c in classes.items():
                if c is cls:
                    aliases[_key(display)] = cls_name
    if not isinstance(name, str):
        raise WrapgradTypeError(f"name: expected a Quantus metric name, got {type(name).__name__}")
    if name in classes:
        return classes[name]
    key = _key(name)
    if key.startswith(PREFIX) and key not in aliases:
        key = key[len(PREFIX) :]
    if key in aliases:
        return classes[aliases[key]]
    squashed = key.replace("_", "")
    for alias, cls_name in aliases.items():
        if alias.replace("_", "") == squashed:
            return classes[cls_name]
    raise UnknownNameError("name", name, classes, what="Quantus metric")


def _category(cls: type) -> str:
    category = getattr(cls, "evaluation_category", None)
    return str(getattr(category, "value", category) or "").lower()


def _is_localisation(cls: type) -> bool:
    """Whether a Quantus metric compares maps with ``(B, 1, ...)`` segmentation masks."""
    return "localisation" in _category(cls)


def _reads_maps_only(cls: type) -> bool:
    """Localisation metrics that read nothing but the maps and the masks (Focus also needs the
    model and mosaic inputs)."""
    return _is_localisation(cls) and cls.__name__ not in MOSAIC


def _direction(metric: Any) -> bool | None:
    """Whether a higher score is better for a Quantus class or metric: the direction of the
    bridge's reduction where it declares one (:mod:`wrapgrad_quantus.reductions`; a class gives
    its defaults), else Quantus' ``score_direction``; None if not said."""
    cls = metric if isinstance(metric, type) else type(metric)
    reduction = REDUCTIONS.get(cls.__name__)
    if reduction is not None and reduction.direction is not None:
        return reduction.direction(metric)
    direction = getattr(cls, "score_direction", None)
    value = str(getattr(direction, "name", direction) or "").lower()
    return True if "higher" in value else False if "lower" in value else None


def _init_names(cls: type) -> tuple[frozenset[str], bool]:
    """The constructor options of a Quantus class as the bridge builds it (its named keyword
    parameters; :func:`~wrapgrad_quantus.fixes.fixed` gives the ``(*args, **kwargs)`` alias
    ``ModelParameterRandomisation`` ``MPRT``'s constructor), and whether they are unknown."""
    names, _ = accepted(fixed(cls))
    return names, not names


def _masks(value: Any, x: np.ndarray) -> np.ndarray:
    """``s_batch`` in Quantus' layout ``(B, 1, *spatial)``: ``(B, *spatial)`` masks get the
    channel axis, ``(B, C, *spatial)`` masks are merged over channels (any)."""
    s = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
    if s.ndim == x.ndim - 1 and s.shape[0] == x.shape[0]:
        s = s[:, None]
    if s.ndim == x.ndim and s.shape[1] > 1:
        s = (s != 0).any(axis=1, keepdims=True).astype(s.dtype)
    if s.ndim != x.ndim or s.shape[0] != x.shape[0] or s.shape[2:] != x.shape[2:]:
        raise WrapgradValueError(
            f"s_batch: expected masks of shape {(x.shape[0], 1, *x.shape[2:])} (or without the "
            f"channel axis) for inputs of shape {x.shape}, got {s.shape}"
        )
    return s


def _positions(value: Any, n: int) -> np.ndarray:
    """Focus' ``custom_batch``: ``(n, 4)`` 0/1 flags of the target class's tiles."""
    p = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
    if p.shape != (n, 4) or not np.isin(p, (0, 1)).all():
        raise WrapgradValueError(
            f"positions: expected ({n}, 4) flags of 0 and 1 (top left, top right, bottom left, "
            f"bottom right: the tiles that show the target class), got shape {p.shape}"
        )
    return p.astype(np.int64)


class QuantusMetric:
    """A Quantus metric run on torch tensors with a wrapgrad ``explain``.

    ``metric(model, inputs, target, explain, **call_kwargs)`` returns one score per sample, a
    float64 tensor ``(B,)``: Quantus' per-sample scores, or for the metrics that return curves
    or per-layer scores their reduction (:data:`~wrapgrad_quantus.reductions.REDUCTIONS`:
    PixelFlipping, Selectivity, RegionPerturbation, ROAD, the MPRT family).
    ``metric.raw(...)`` takes the same arguments and returns Quantus' result as Quantus gives it
    (the curves, the dict of per-layer scores). ``explain`` is what
    :func:`wrapgrad.wrap` returns, or None with ``explain_func_kwargs={...}`` for
    :func:`~wrapgrad_quantus.quantus_explain`. With ``explain``, the maps of ``inputs`` are
    ``explain(inputs, target=target)`` (one call; summed over channels for the localisation
    metrics, whose masks have one channel) and every re-explanation Quantus asks for (perturbed
    inputs, randomised models) goes through the same explainer and enhancer. ``call_kwargs`` go
    to the Quantus call (``s_batch`` masks, ``a_batch`` maps, ``softmax``, ...; tensors are
    converted).

    Attributes:
        cls: the Quantus class; ``quantus``: the constructed Quantus metric.
        seed: seeds the global RNGs Quantus draws from (NumPy's for its perturbations, torch's
            for model randomisation) for each call, and the explanations the call asks for that
            have no seed of their own (each its own, from a stream seeded from ``seed``); None
            draws fresh entropy from the operating system, not from a global RNG. Either way
            the caller's random states (NumPy's, Python's, torch's) are restored afterwards
            (:mod:`wrapgrad_quantus.rng`).
        batch_size: samples per Quantus batch (Quantus' default 64).
        share_predictions: let Quantus evaluate the model through a
            :class:`~wrapgrad_quantus.memo.MemoModel`, which remembers no-gradient predictions
            by input content and the model's state across calls: scoring several explanations
            of the same inputs with the same ``seed`` (FaithfulnessCorrelation's masked copies
            depend on the inputs and the seed only) then runs each forward pass once. Exact
            for a deterministic model in evaluation mode; leave it off for a model whose
            forward is random (an SDE, dropout on).
    """

    def __init__(
        self,
        cls: type,
        init_kwargs: dict[str, Any],
        *,
        seed: int | None = None,
        batch_size: int | None = None,
        share_predictions: bool = False,
    ) -> None:
        self.cls = cls
        self.name = cls.__name__
        self.init_kwargs = init_kwargs
        self.seed = check_seed(seed)
        self.batch_size = batch_size
        self.share_predictions = bool(share_predictions)
        # The class as the bridge runs it (wrapgrad_quantus.fixes): a subclass where Quantus
        # fails here (NumPy 2, BatchSufficiency, ROAD's per-sample curves, InputInvariance);
        # FaithfulnessCorrelation with its perturbation plan shared (the same scores,
        # wrapgrad_quantus.faithfulness).
        self.quantus = planned(fixed(cls))(**init_kwargs)

    @property
    def higher_is_better(self) -> bool | None:
        return _direction(self.quantus)

    def _run(self, **kwargs: Any) -> Any:
        """Call Quantus (inside :meth:`_isolated`), with the metric's ``batch_size``."""
        if self.batch_size is not None:
            kwargs.setdefault("batch_size", self.batch_size)
        return self.quantus(**kwargs)

    def _isolated(self, device: Any) -> Any:
        """The block of one call with the global RNGs isolated
        (:func:`wrapgrad_quantus.rng.isolated`): Quantus draws its perturbations from NumPy's
        global RNG, some metrics reseed torch's (the model randomisation tests call
        ``torch.manual_seed``), and explanations without a seed draw from torch's. NumPy's,
        Python's and torch's global states (the CPU one and the CUDA ones) are seeded from
        ``seed`` (fresh entropy when it is None; never drawn from a global RNG) and restored
        afterwards, so a call never changes the caller's random state."""
        return isolated(self.seed, device)

    def scores(self, out: Any, n: int) -> Tensor:
        """One score per sample, float64 ``(n,)``, from the result ``out`` of a call: Quantus'
        per-sample scores as they are, other results by the class's reduction."""
        if isinstance(out, (list, np.ndarray)):
            arr = np.asarray(out, dtype=np.float64)
            if arr.ndim == 1 and arr.shape[0] == n:
                return torch.from_numpy(arr)
        reduction = REDUCTIONS.get(self.name)
        if reduction is None:
            raise WrapgradValueError(
                f"{self.name} returned {type(out).__name__} "
                f"{getattr(np.asarray(out, dtype=object), 'shape', '')}, not one score per "
                f"sample for {n} samples; metric.raw(...) returns Quantus' result as it is"
            )
        values = np.asarray(reduction(self.quantus, out), dtype=np.float64)
        if values.shape != (n,):
            raise WrapgradValueError(
                f"{self.name}: the {reduction.name} of Quantus' result has shape {values.shape}, "
                f"expected ({n},)"
            )
        return torch.from_numpy(values)

    def __call__(
        self, model: nn.Module, inputs: Any, target: Any, explain: Any = None, **kwargs: Any
    ) -> Tensor:
        """One score per sample (see the class docstring); ``kwargs`` as for :meth:`raw`."""
        if self.name in NOT_PER_SAMPLE:
            raise WrapgradValueError(f"metric: {NOT_PER_SAMPLE[self.name]}")
        return self.scores(self.raw(model, inputs, target, explain, **kwargs), _rows(inputs))

    def raw(
        self,
        model: nn.Module,
        inputs: Any,
        target: Any,
        explain: Any = None,
        *,
        explain_func_kwargs: dict[str, Any] | None = None,
        **call_kwargs: Any,
    ) -> Any:
        """Quantus' result as Quantus returns it (per-sample scores as a list, curves, a dict of
        per-layer scores, ...), for the same arguments as a call."""
        device = model_device(model)
        with self._isolated(call_kwargs.get("device", device)):
            return self._raw(model, inputs, target, explain, explain_func_kwargs, call_kwargs)

    def _raw(
        self,
        model: nn.Module,
        inputs: Any,
        target: Any,
        explain: Any,
        explain_func_kwargs: dict[str, Any] | None,
        call_kwargs: dict[str, Any],
    ) -> Any:
        """:meth:`raw`, inside its call's isolated global RNGs."""
        if self.name in MOSAIC and call_kwargs.get("custom_batch") is None:
            raise WrapgradValueError(
                f"custom_batch: {self.name} scores 2x2 mosaics of images; pass the positions of "
                "the target class's tiles, (B, 4) flags of 0 and 1 (top left, top right, bottom "
                "left, bottom right), as custom_batch= (the registered metric takes them as "
                "its fifth argument)"
            )
        localisation = _is_localisation(self.cls)
        device = model_device(model)
        x_t = inputs if isinstance(inputs, Tensor) else to_tensor(inputs, device, "inputs")
        x = x_t.detach().cpu().numpy()
        if isinstance(target, Tensor):
            y = target.detach().cpu().numpy()
        elif target is None:
            with torch.no_grad():
                y = model(to_tensor(x, device, "inputs")).argmax(dim=1).cpu().numpy()
        else:
            y = np.asarray(target)
            if y.ndim == 0:
                y = np.full(x.shape[0], int(y))
        # Localisation metrics compare maps with (B, 1, ...) masks: sum the channels, as
        # Quantus' own explain does.
        axes = (1,) if x.ndim >= 3 and x.shape[1] > 1 and localisation else None
        efk = dict(explain_func_kwargs or {})
        if explain is None:
            explain_func: Callable[..., Any] = quantus_explain
            if axes is not None:
                efk.setdefault("reduce_axes", axes)
        elif callable(explain) and hasattr(explain, "explainer"):
            explain_func = explain_func_from(explain, reduce_axes=axes)
            if call_kwargs.get("a_batch") is None:
                t = (
                    torch.as_tensor(y, device=x_t.device)
                    if not isinstance(target, Tensor)
                    else target
                )
                # Its own seed from the call's stream: Quantus then finds NumPy's RNG as seeded.
                with isolated(None, x_t.device):
                    maps = explain(x_t, target=t)
                call_kwargs["a_batch"] = to_numpy_map(
                    reduce_map(maps, axes) if isinstance(maps, Tensor) else maps
                )
        else:
            raise WrapgradTypeError(
                f"explain: expected what wrapgrad.wrap returns, or None with explain_func_kwargs, "
                f"got {type(explain).__name__}"
            )
        if isinstance(call_kwargs.get("a_batch"), Tensor):
            call_kwargs["a_batch"] = call_kwargs["a_batch"].detach().cpu().numpy()
        if call_kwargs.get("s_batch") is not None:
            call_kwargs["s_batch"] = _masks(call_kwargs["s_batch"], x)
        call_kwargs.setdefault("device", str(device) if device is not None else "cpu")
        out = self._run(
            model=MemoModel(model) if self.share_predictions else model,
            x_batch=x,
            y_batch=y,
            explain_func=explain_func,
            explain_func_kwargs=efk,
            **call_kwargs,
        )
        return out

    def on_maps(self, attributions: Tensor, mask: Tensor) -> Any:
        """A localisation score of given maps against ground-truth masks, per sample.

        Multi-channel maps are summed over channels first (one relevance per pixel). Quantus'
        localisation metrics read only the maps and the masks; the ``x_batch`` it requires is
        given the maps' own (one-channel) shape, and no model.
        """
        if not _reads_maps_only(self.cls):
            raise WrapgradValueError(
                f"attributions: {self.name} needs the model and inputs, not maps and masks alone; "
                f"call metric(model, inputs, target, explain, s_batch=masks)"
            )
        if not isinstance(attributions, Tensor):
            raise WrapgradTypeError(
                f"attributions: expected a tensor, got {type(attributions).__name__}"
            )
        a = attributions.detach()
        if a.dim() >= 3 and a.shape[1] > 1:
            a = a.sum(dim=1, keepdim=True)
        a_np = a.to(torch.float32).cpu().numpy()
        with self._isolated(None):
            out = self._run(
                model=None,
                x_batch=a_np,
                y_batch=np.zeros(a_np.shape[0], dtype=np.int64),
                a_batch=a_np,
                s_batch=_masks(mask, a_np),
            )
        return self.scores(out, a_np.shape[0])

    def __repr__(self) -> str:
        return f"QuantusMetric({self.name})"


class QuantusMaskMetric:
    """A Quantus localisation metric in wrapgrad's mask form: ``m(attributions, mask)``
    (see :meth:`QuantusMetric.on_maps`)."""

    def __init__(self, metric: QuantusMetric) -> None:
        self.metric = metric

    @property
    def higher_is_better(self) -> bool | None:
        return self.metric.higher_is_better

    def __call__(self, attributions: Tensor, mask: Tensor) -> Any:
        return self.metric.on_maps(attributions, mask)

    def __repr__(self) -> str:
        return f"QuantusMaskMetric({self.metric.name})"


class QuantusMosaicMetric:
    """A Quantus metric on 2x2 mosaics (Focus) in wrapgrad's mosaic form: ``m(model, mosaics,
    target, explain, positions)``, ``positions`` the ``(B, 4)`` 0/1 flags of the tiles (top
    left, top right, bottom left, bottom right) that show the target class, Quantus'
    ``custom_batch``."""

    def __init__(self, metric: QuantusMetric) -> None:
        self.metric = metric

    @property
    def higher_is_better(self) -> bool | None:
        return self.metric.higher_is_better

    def __call__(
        self, model: nn.Module, mosaics: Any, target: Any, explain: Any, positions: Any, **kw: Any
    ) -> Tensor:
        kw["custom_batch"] = _positions(positions, _rows(mosaics))
        return self.metric(model, mosaics, target, explain, **kw)

    def __repr__(self) -> str:
        return f"QuantusMosaicMetric({self.metric.name})"


def _rows(inputs: Any) -> int:
    return int(inputs.shape[0])


def quantus_metric(
    name: str,
    *,
    seed: int | None = None,
    batch_size: int | None = None,
    share_predictions: bool = False,
    **init_kwargs: Any,
) -> QuantusMetric:
    """Any Quantus metric by name: its class name (``"MaxSensitivity"``), snake case
    (``"max_sensitivity"``), registered name (``"quantus_max_sensitivity"``) or Quantus' display
    name (``"Max-Sensitivity"``). ``init_kwargs`` go to the metric's constructor (one score per
    sample: ``return_aggregate=False``, and ``disable_warnings=True``,
    ``display_progressbar=False``, unless given); ``seed``, ``batch_size`` and
    ``share_predictions`` are described in :class:`QuantusMetric` (a class that takes ``seed``
    itself gets it too). An unknown name
    raises :class:`~wrapgrad.errors.UnknownNameError` with suggestions."""
    cls = _resolve(name)
    names, _ = _init_names(cls)
    for key, default in (
        ("return_aggregate", False),
        ("disable_warnings", True),
        ("display_progressbar", False),
    ):
        if key in names:
            init_kwargs.setdefault(key, default)
    if seed is not None and "seed" in names:
        init_kwargs.setdefault("seed", seed)
    return QuantusMetric(
        cls, init_kwargs, seed=seed, batch_size=batch_size, share_predictions=share_predictions
    )


#: The registered metric's class by call form (:attr:`~wrapgrad.records.MetricSpec.requires`).
_FORMS: dict[str, Callable[[QuantusMetric], Any]] = {
    "mask": QuantusMaskMetric,
    "mosaic": QuantusMosaicMetric,
    "model": lambda metric: metric,
}


def _form(cls: type) -> str:
    if cls.__name__ in MOSAIC:
        return "mosaic"
    return "mask" if _reads_maps_only(cls) else "model"


def _factory(cls_name: str, form: str) -> Callable[..., Any]:
    def build(**params: Any) -> Any:
        return _FORMS[form](quantus_metric(cls_name, **params))

    build.__name__ = metric_name(cls_name)
    build.__doc__ = f"Quantus {cls_name} (see quantus.{cls_name})."
    return build


def _summary(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    first = next((line.strip() for line in doc.splitlines() if line.strip()), "")
    return f"Quantus {cls.__name__}: {first}"[:120]


def metric_specs() -> Iterator[MetricSpec]:
    """One :class:`~wrapgrad.records.MetricSpec` per Quantus metric class."""
    for cls_name, cls in sorted(quantus_metrics().items()):
        names, unknown = _init_names(cls)
        form = _form(cls)
        yield MetricSpec(
            name=metric_name(cls_name),
            factory=_factory(cls_name, form),
            summary=_summary(cls),
            options=None if unknown else (*sorted(names), *_OWN_OPTIONS),
            smoke={k: v for k, v in SMOKE_CAPS.items() if k in names},
            higher_is_better=_direction(cls),
            requires=form,
            unavailable=NOT_PER_SAMPLE.get(cls_name, ""),
        )
