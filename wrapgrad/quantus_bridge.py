"""The Quantus bridge: wrapgrad explanations (enhanced ones included) inside any Quantus metric.

Quantus calls ``explain_func(model=..., inputs=..., targets=..., **explain_func_kwargs)`` with
numpy arrays (channel first) and expects a numpy array back. :func:`quantus_explain` is such a
function; ``explain_func_kwargs`` configure it like :func:`wrapgrad.wrap`::

    import quantus, wrapgrad
    metric = quantus.MaxSensitivity(nr_samples=5, disable_warnings=True)
    scores = metric(
        model=model, x_batch=x, y_batch=y, device="cpu",
        explain_func=wrapgrad.quantus_explain,
        explain_func_kwargs={"method": "saliency", "enhancer": "noisegrad",
                             "sigma": 0.2, "n_samples": 10, "seed": 0},
    )

:func:`quantus_metric` builds any Quantus metric by name and runs it on torch tensors with a
wrapgrad ``explain`` (its explainer and enhancer are re-applied to whatever model Quantus hands
over, e.g. the layer-randomised copies of ModelParameterRandomisation).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from wrapgrad.errors import UnknownNameError, WrapgradTypeError, WrapgradValueError

__all__ = [
    "QuantusMetric",
    "explain_func_from",
    "quantus_explain",
    "quantus_metric",
    "quantus_metrics",
]

#: Keyword arguments Quantus may add to ``explain_func_kwargs`` that are not ``wrap()`` options.
_QUANTUS_EXTRAS = {"device", "channel_first", "softmax", "model_predict_kwargs", "xai_lib"}


def _is_localisation(cls: type) -> bool:
    """Whether a Quantus metric compares maps with ``(B, 1, ...)`` segmentation masks."""
    category = getattr(cls, "evaluation_category", None)
    return "localisation" in str(getattr(category, "value", category) or "").lower()


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


def _to_tensor(value: Any, device: torch.device | None, argument: str) -> Tensor:
    if isinstance(value, Tensor):
        t = value
    elif isinstance(value, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(value))
    else:
        raise WrapgradTypeError(
            f"{argument}: expected a numpy array or a tensor, got {type(value).__name__}"
        )
    if t.is_floating_point():
        t = t.to(torch.float32)
    t = t.to(device) if device is not None else t
    if t.is_floating_point() and argument == "inputs":
        t = t.detach().requires_grad_(True)  # gradient methods want a leaf that requires grad
    return t


def _model_device(model: Any) -> torch.device | None:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return None


def _targets(targets: Any, n: int, device: torch.device | None) -> Any:
    if targets is None:
        return None
    if isinstance(targets, (int, np.integer)):
        return int(targets)
    t = torch.as_tensor(np.asarray(targets) if not isinstance(targets, Tensor) else targets)
    t = t.reshape(-1).to(torch.long)
    if t.numel() == 1:
        return int(t.item())
    if t.numel() != n:
        raise WrapgradValueError(f"targets: expected {n} class indices, got {t.numel()}")
    return t.to(device) if device is not None else t


def _reduce(out: Tensor, reduce_axes: Any, keepdims: bool = True) -> Tensor:
    """Sum the map over ``reduce_axes`` as Quantus' own ``explain`` does (``keepdims`` keeps them
    as size 1, which Quantus' channel-first metrics expect)."""
    if reduce_axes is None:
        return out
    axes = (reduce_axes,) if isinstance(reduce_axes, int) else tuple(reduce_axes)
    if not axes:
        return out
    if any(not isinstance(a, int) or isinstance(a, bool) for a in axes) or any(
        a % out.dim() == 0 for a in axes
    ):
        raise WrapgradValueError(
            f"reduce_axes: expected map axes other than the batch axis 0 (e.g. (1,) for the "
            f"channels of a map of shape {tuple(out.shape)}), got {reduce_axes!r}"
        )
    return out.sum(dim=axes, keepdim=bool(keepdims))


def _to_numpy(out: Any) -> np.ndarray:
    if isinstance(out, tuple):
        if len(out) != 1:
            raise WrapgradTypeError(
                f"explain_func: Quantus needs one map per sample, got a tuple of {len(out)} maps"
            )
        out = out[0]
    if not isinstance(out, Tensor):
        raise WrapgradTypeError(f"explain_func: expected a tensor map, got {type(out).__name__}")
    return out.detach().to(torch.float32).cpu().numpy()


def quantus_explain(
    model: nn.Module,
    inputs: Any,
    targets: Any,
    *,
    method: Any = "saliency",
    enhancer: Any = None,
    reduce_axes: Any = None,
    keepdims: bool = True,
    **options: Any,
) -> np.ndarray:
    """An ``explain_func`` in Quantus' calling convention.

    Args:
        model: the torch model Quantus passes (it may be a modified copy of the user's).
        inputs: ``(B, C, ...)`` numpy array (or tensor), channel first.
        targets: class indices, ``(B,)`` or one int.
        method: a ``wrap()`` method (name, Captum class, or callable).
        enhancer: a ``wrap()`` enhancer name or object (``"smoothgrad"``, ``"noisegrad"``, ...).
        reduce_axes: axes to sum the map over, e.g. ``(1,)`` for the channel axis (Quantus'
            key). Default None: the map keeps the inputs' shape, which the robustness,
            faithfulness, complexity and randomisation metrics use feature by feature; the
            localisation metrics compare maps with ``(B, 1, H, W)`` masks and need ``(1,)`` for
            multi-channel inputs (:class:`QuantusMetric` sets it for them).
        keepdims: keep the reduced axes as size 1 (Quantus' key; default True).
        **options: ``wrap()`` options (enhancer options such as ``sigma``, ``n_samples``, ``seed``,
            and the method's options); ``device`` and the other arguments Quantus adds are
            accepted (``device`` places the inputs).

    Returns:
        The attributions as a float32 numpy array of the inputs' shape (reduced over
        ``reduce_axes``).
    """
    from wrapgrad.wrapping import wrap

    device_opt = options.get("device")
    for key in _QUANTUS_EXTRAS:
        options.pop(key, None)
    if not isinstance(model, nn.Module):
        get_model = getattr(model, "get_model", None)
        if callable(get_model):
            model = get_model()
    if not isinstance(model, nn.Module):
        raise WrapgradTypeError(
            f"model: quantus_explain explains torch models, got {type(model).__name__}"
        )
    device = _model_device(model)
    if device is None and device_opt is not None:
        device = torch.device(device_opt)
    x = _to_tensor(inputs, device, "inputs")
    t = _targets(targets, x.shape[0], x.device)
    explain = wrap(model, method, enhancer, **options)
    out = explain(x, target=t)
    return _to_numpy(_reduce(out, reduce_axes, keepdims) if isinstance(out, Tensor) else out)


def explain_func_from(explain: Any, *, reduce_axes: Any = None) -> Callable[..., np.ndarray]:
    """A Quantus ``explain_func`` from what :func:`wrapgrad.wrap` returns: the same explainer and
    enhancer, applied to the model Quantus passes."""
    from wrapgrad.wrapping import Explain

    if not isinstance(explain, Explain):
        raise WrapgradTypeError(
            f"explain: expected what wrapgrad.wrap returns, got {type(explain).__name__}"
        )

    def explain_func(model: Any, inputs: Any, targets: Any, **kwargs: Any) -> np.ndarray:
        axes = kwargs.get("reduce_axes", reduce_axes)
        keepdims = kwargs.get("keepdims", True)
        if not isinstance(model, nn.Module) and callable(getattr(model, "get_model", None)):
            model = model.get_model()
        device = _model_device(model)
        x = _to_tensor(inputs, device, "inputs")
        t = _targets(targets, x.shape[0], x.device)
        ex = (
            explain
            if model is explain.model
            else Explain(model, explain.explainer, explain.enhancer, guard=explain.guard)
        )
        out = ex(x, target=t)
        return _to_numpy(_reduce(out, axes, keepdims) if isinstance(out, Tensor) else out)

    explain_func.__name__ = "wrapgrad_explain_func"
    return explain_func


def _snake(name: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    s = re.sub(r"(?<=[A-Z])([A-Z][a-z])", r"_\1", s)
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")


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
        aliases[_snake(cls_name)] = cls_name
        aliases[cls_name.lower()] = cls_name
    for group in getattr(quantus, "AVAILABLE_METRICS", {}).values():
        for display, cls in group.items():
            for cls_name, c in classes.items():
                if c is cls:
                    aliases[_snake(display)] = cls_name
    if not isinstance(name, str):
        raise WrapgradTypeError(f"name: expected a Quantus metric name, got {type(name).__name__}")
    if name in classes:
        return classes[name]
    key = _snake(name)
    if key in aliases:
        return classes[aliases[key]]
    squashed = key.replace("_", "")
    for alias, cls_name in aliases.items():
        if alias.replace("_", "") == squashed:
            return classes[cls_name]
    raise UnknownNameError("name", name, classes, what="Quantus metric")


class QuantusMetric:
    """A Quantus metric run on torch tensors with a wrapgrad ``explain``.

    ``metric(model, inputs, target, explain, **call_kwargs)`` returns the scores: a float64
    tensor ``(B,)`` where Quantus returns one score per sample, else what Quantus returns (a
    dict of per-layer scores for the randomisation metrics). ``explain`` is what
    :func:`wrapgrad.wrap` returns, or None with ``explain_func_kwargs={...}`` for
    :func:`quantus_explain`. ``call_kwargs`` go to the Quantus call (``s_batch`` masks,
    ``a_batch``, ``softmax``, ...; tensors are converted).
    """

    def __init__(self, cls: type, init_kwargs: dict[str, Any]) -> None:
        self.cls = cls
        self.name = cls.__name__
        self.init_kwargs = init_kwargs
        self.quantus = cls(**init_kwargs)

    @property
    def higher_is_better(self) -> bool | None:
        direction = getattr(self.quantus, "score_direction", None)
        value = str(getattr(direction, "name", direction) or "").lower()
        return True if "higher" in value else False if "lower" in value else None

    def __call__(
        self,
        model: nn.Module,
        inputs: Any,
        target: Any,
        explain: Any = None,
        *,
        explain_func_kwargs: dict[str, Any] | None = None,
        **call_kwargs: Any,
    ) -> Any:
        if explain is None:
            explain_func: Callable[..., Any] = quantus_explain
            efk = dict(explain_func_kwargs or {})
        elif callable(explain) and hasattr(explain, "explainer"):
            explain_func = explain_func_from(explain)
            efk = dict(explain_func_kwargs or {})
        else:
            raise WrapgradTypeError(
                f"explain: expected what wrapgrad.wrap returns, or None with explain_func_kwargs, "
                f"got {type(explain).__name__}"
            )
        device = _model_device(model)
        x = inputs.detach().cpu().numpy() if isinstance(inputs, Tensor) else np.asarray(inputs)
        if isinstance(target, Tensor):
            y = target.detach().cpu().numpy()
        elif target is None:
            with torch.no_grad():
                y = model(_to_tensor(x, device, "inputs")).argmax(dim=1).cpu().numpy()
        else:
            y = np.asarray(target)
            if y.ndim == 0:
                y = np.full(x.shape[0], int(y))
        if isinstance(call_kwargs.get("a_batch"), Tensor):
            call_kwargs["a_batch"] = call_kwargs["a_batch"].detach().cpu().numpy()
        if call_kwargs.get("s_batch") is not None:
            call_kwargs["s_batch"] = _masks(call_kwargs["s_batch"], x)
        if x.ndim >= 3 and x.shape[1] > 1 and _is_localisation(self.cls):
            # Localisation metrics compare maps with (B, 1, ...) masks: sum the channels, as
            # Quantus' own explain does.
            if explain is None:
                efk.setdefault("reduce_axes", (1,))
            else:
                explain_func = explain_func_from(explain, reduce_axes=(1,))
        call_kwargs.setdefault("device", str(device) if device is not None else "cpu")
        out = self.quantus(
            model=model,
            x_batch=x,
            y_batch=y,
            explain_func=explain_func,
            explain_func_kwargs=efk,
            **call_kwargs,
        )
        if isinstance(out, (list, np.ndarray)):
            arr = np.asarray(out, dtype=np.float64)
            if arr.ndim == 1 and arr.shape[0] == x.shape[0]:
                return torch.from_numpy(arr)
            return arr
        return out

    def __repr__(self) -> str:
        return f"QuantusMetric({self.name})"


def quantus_metric(name: str, **init_kwargs: Any) -> QuantusMetric:
    """Any Quantus metric by name: its class name (``"MaxSensitivity"``), snake case
    (``"max_sensitivity"``) or Quantus' display name (``"Max-Sensitivity"``). ``init_kwargs`` go to
    the metric's constructor (``disable_warnings=True`` and ``display_progressbar=False`` unless
    given). An unknown name raises :class:`~wrapgrad.errors.UnknownNameError` with suggestions."""
    cls = _resolve(name)
    params = inspect.signature(cls.__init__).parameters
    for key, default in (("disable_warnings", True), ("display_progressbar", False)):
        if key in params:
            init_kwargs.setdefault(key, default)
    return QuantusMetric(cls, init_kwargs)
