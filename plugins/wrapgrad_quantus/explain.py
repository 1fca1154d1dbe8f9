"""wrapgrad explanations in Quantus' calling convention.

Quantus calls ``explain_func(model=..., inputs=..., targets=..., **explain_func_kwargs)`` with
numpy arrays (channel first) and expects a numpy array back. :func:`quantus_explain` is such a
function; ``explain_func_kwargs`` configure it like :func:`wrapgrad.wrap`::

    import quantus
    from wrapgrad_quantus import quantus_explain

    metric = quantus.MaxSensitivity(nr_samples=5, disable_warnings=True)
    scores = metric(
        model=model, x_batch=x, y_batch=y, device="cpu",
        explain_func=quantus_explain,
        explain_func_kwargs={"method": "saliency", "enhancer": "noisegrad",
                             "sigma": 0.2, "n_samples": 10, "seed": 0},
    )

:func:`explain_func_from` turns what :func:`wrapgrad.wrap` returns into such a function: its
explainer and enhancer are re-applied to whatever model Quantus hands over (e.g. the
layer-randomised copies of ModelParameterRandomisation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from wrapgrad.checks import check_map, check_seed
from wrapgrad.errors import WrapgradTypeError, WrapgradValueError
from wrapgrad.functional import model_device
from wrapgrad_quantus.rng import isolated

__all__ = ["explain_func_from", "quantus_explain", "reduce_map", "to_numpy_map", "to_tensor"]

#: Keyword arguments Quantus may add to ``explain_func_kwargs`` that are not ``wrap()`` options.
_QUANTUS_EXTRAS = {"device", "channel_first", "softmax", "model_predict_kwargs", "xai_lib"}


def to_tensor(value: Any, device: torch.device | None, argument: str) -> Tensor:
    """A numpy array or tensor as a tensor on ``device``; floating inputs become float32 leaves
    that require gradients (what gradient methods want)."""
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
        t = t.detach().requires_grad_(True)
    return t


def targets_of(targets: Any, n: int, device: torch.device | None) -> Any:
    """Quantus' ``targets`` (an int, or one class per sample) as ``wrap()`` targets."""
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


def reduce_map(out: Tensor, reduce_axes: Any, keepdims: bool = True) -> Tensor:
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


def to_numpy_map(out: Any) -> np.ndarray:
    """One map per sample (a tensor, or a 1-tuple of one) as a float32 numpy array."""
    return check_map(out, "explain_func").detach().to(torch.float32).cpu().numpy()


def _torch_model(model: Any) -> Any:
    """The torch module behind what Quantus passes (its model wrappers have ``get_model``; a
    :class:`~wrapgrad_quantus.memo.MemoModel` is unwrapped, so explanations see the model
    itself)."""
    from wrapgrad_quantus.memo import unwrap

    if not isinstance(model, nn.Module) and callable(getattr(model, "get_model", None)):
        model = model.get_model()
    return unwrap(model)


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
            multi-channel inputs (:class:`~wrapgrad_quantus.QuantusMetric` sets it for them).
        keepdims: keep the reduced axes as size 1 (Quantus' key; default True).
        **options: ``wrap()`` options (enhancer options such as ``sigma``, ``n_samples``, ``seed``,
            and the method's options); ``device`` and the other arguments Quantus adds are
            accepted (``device`` places the inputs).

    The call runs with the global RNGs seeded from ``seed`` and the caller's random states
    restored afterwards (:func:`wrapgrad_quantus.rng.isolated`): without ``seed`` each call
    draws fresh randomness (inside a :class:`~wrapgrad_quantus.QuantusMetric` call, from the
    metric's seeded stream), and no call changes NumPy's, Python's or torch's global RNG.

    Returns:
        The attributions as a float32 numpy array of the inputs' shape (reduced over
        ``reduce_axes``).
    """
    from wrapgrad.wrapping import wrap

    device_opt = options.get("device")
    for key in _QUANTUS_EXTRAS:
        options.pop(key, None)
    model = _torch_model(model)
    if not isinstance(model, nn.Module):
        raise WrapgradTypeError(
            f"model: quantus_explain explains torch models, got {type(model).__name__}"
        )
    device = model_device(model)
    if device is None and device_opt is not None:
        device = torch.device(device_opt)
    x = to_tensor(inputs, device, "inputs")
    t = targets_of(targets, x.shape[0], x.device)
    seed = check_seed(options.get("seed"))
    with isolated(seed, x.device):
        out = wrap(model, method, enhancer, **options)(x, target=t)
    return to_numpy_map(reduce_map(out, reduce_axes, keepdims) if isinstance(out, Tensor) else out)


def explain_func_from(explain: Any, *, reduce_axes: Any = None) -> Callable[..., np.ndarray]:
    """A Quantus ``explain_func`` from what :func:`wrapgrad.wrap` returns (or anything with its
    ``model``, ``explainer``, ``enhancer`` and ``guard``): the same explainer and enhancer,
    applied to the model Quantus passes (a randomised copy too: with its seed, output selector
    and validation). Each call is seeded from ``explain_func_kwargs``' ``seed`` where it is
    given, and leaves the global RNGs as it found them, as :func:`quantus_explain` does."""
    from wrapgrad.wrapping import Explain

    if not all(hasattr(explain, a) for a in ("model", "explainer", "enhancer", "guard")):
        raise WrapgradTypeError(
            f"explain: expected what wrapgrad.wrap returns, got {type(explain).__name__}"
        )

    def explain_func(model: Any, inputs: Any, targets: Any, **kwargs: Any) -> np.ndarray:
        axes = kwargs.get("reduce_axes", reduce_axes)
        keepdims = kwargs.get("keepdims", True)
        model = _torch_model(model)
        x = to_tensor(inputs, model_device(model), "inputs")
        t = targets_of(targets, x.shape[0], x.device)
        ex = (
            explain
            if model is explain.model
            else Explain(
                model,
                explain.explainer,
                explain.enhancer,
                guard=explain.guard,
                validate=getattr(explain, "validate", True),
                output=getattr(explain, "output", None),
                seed=getattr(explain, "seed", None),  # wrap(..., seed=) of a method that draws
            )
        )
        with isolated(check_seed(kwargs.get("seed")), x.device):
            out = ex(x, target=t)
        return to_numpy_map(reduce_map(out, axes, keepdims) if isinstance(out, Tensor) else out)

    explain_func.__name__ = "wrapgrad_explain_func"
    return explain_func
