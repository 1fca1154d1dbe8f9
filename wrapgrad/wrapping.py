"""``wrapgrad.wrap`` (module ``wrapgrad.wrapping``): a model and a method (plus an enhancer) -> ``explain``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from wrapgrad.captum_adapter import BoundExplainer, CaptumExplainer, FunctionExplainer
from wrapgrad.checks import (
    as_input_tuple,
    check_finite,
    check_inputs,
    check_target,
    probe_output,
)
from wrapgrad.errors import UnknownNameError, WrapgradTypeError, WrapgradValueError
from wrapgrad.functional import ModelGuard, model_device
from wrapgrad.records import ExplainerTraits, traits_of
from wrapgrad.registry import Registry, get_registry

__all__ = ["Explain", "build_explainer", "wrap"]

_WRAP_OPTIONS = {
    "layer",
    "interpolate",
    "guard",
    "registry",
    "validate",
    "calibration",
    "calibrator",
    "calibration_options",
}


def _factory_parameters(factory: Callable[..., Any]) -> tuple[set[str], bool]:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return set(), True
    names = {
        n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    } - {"self"}
    return names, any(p.kind == p.VAR_KEYWORD for p in params.values())


def build_explainer(
    method: Any,
    *,
    layer: Any = None,
    interpolate: bool | str = False,
    options: dict[str, Any] | None = None,
    registry: Registry | None = None,
) -> Any:
    """An Explainer from a registered name, a Captum class or object, or a callable.

    ``options`` are the method's own options (constructor options and ``attribute`` defaults for
    Captum methods); an option the method does not take raises :class:`UnknownNameError`.
    """
    from captum.attr import Attribution

    options = dict(options or {})
    if isinstance(method, str):
        spec = (registry or get_registry()).get("explainer", method, argument="method")
        kwargs = dict(options)
        if layer is not None:
            kwargs["layer"] = layer
        if interpolate:
            kwargs["interpolate"] = interpolate
        names, var_kw = _factory_parameters(spec.factory)
        if not var_kw:
            for key in kwargs:
                if key not in names:
                    raise UnknownNameError("options", key, names, what=f"option of {spec.name}")
        return spec.factory(**kwargs)
    if isinstance(method, Attribution) or (
        inspect.isclass(method) and issubclass(method, Attribution)
    ):
        return CaptumExplainer.from_options(
            method, layer=layer, interpolate=interpolate, options=options
        )
    if inspect.isclass(method):
        raise WrapgradTypeError(
            f"method: expected a method name, a Captum attribution class or object, or a callable "
            f"(model, inputs, target, **kw); got the class {method.__name__}"
        )
    if callable(method):
        if layer is not None or interpolate:
            raise WrapgradValueError("layer: a callable explainer takes no layer= or interpolate=")
        explainer = method if isinstance(method, FunctionExplainer) else FunctionExplainer(method)
        return BoundExplainer(explainer, options) if options else explainer
    raise WrapgradTypeError(
        f"method: expected a method name (e.g. 'integrated_gradients'), a Captum attribution "
        f"class or object, or a callable (model, inputs, target, **kw); got {type(method).__name__}"
    )


class Explain:
    """The callable :func:`wrap` returns: ``explain(inputs, target=None, **attribute_kwargs)``.

    Every call validates the inputs and target, runs the explainer (through the enhancer, if
    any) inside a :class:`~wrapgrad.functional.ModelGuard`, and returns attributions as torch
    tensors of the inputs' shape (a tuple for tuple inputs) on the inputs' device; layer methods
    return what Captum returns for the layer (or the resized map with ``interpolate=``).

    Attributes:
        model: the wrapped model (never mutated).
        explainer: the attribution method as an Explainer.
        enhancer: the enhancer, or None.
    """

    def __init__(
        self,
        model: nn.Module,
        explainer: Any,
        enhancer: Any = None,
        *,
        guard: str = "restore",
        validate: bool = True,
    ) -> None:
        self.model = model
        self.explainer = explainer
        self.enhancer = enhancer
        self.guard = guard
        self.validate = validate
        self.calibration: Any = None
        """The calibration record when a noise level was ``"auto"`` (see :func:`wrap`)."""
        self._output_shapes: dict[tuple[Any, ...], tuple[int, ...]] = {}

    @property
    def traits(self) -> ExplainerTraits:
        """What the explainer can do (see :class:`~wrapgrad.records.ExplainerTraits`)."""
        return traits_of(self.explainer)

    @property
    def family(self) -> str:
        return self.traits.family

    def _check(self, inputs: Any, target: Any, kwargs: dict[str, Any]) -> None:
        device = model_device(self.model)
        tensors, _ = check_inputs(
            inputs,
            device=device,
            require_float=self.traits.requires_grad_inputs,
        )
        baselines = kwargs.get("baselines")
        if isinstance(baselines, Tensor) or (
            isinstance(baselines, (tuple, list)) and baselines and isinstance(baselines[0], Tensor)
        ):
            btensors, was_tuple = as_input_tuple(baselines, "baselines")
            for i, b in enumerate(btensors):
                name = f"baselines[{i}]" if was_tuple else "baselines"
                check_finite(b, name)
                if device is not None and b.device != device:
                    raise WrapgradValueError(
                        f"{name}: expected a tensor on the model's device {device}, got {b.device}"
                    )
        if target is not None and self.family != "neuron":
            extra = kwargs.get("additional_forward_args")
            key = tuple((tuple(t.shape[1:]), t.dtype, t.device) for t in tensors)
            dims = self._output_shapes.get(key) if extra is None else None
            if dims is None:
                dims = tuple(probe_output(self.model, tensors, extra).shape[1:])
                if extra is None:
                    self._output_shapes[key] = dims
            check_target(target, (tensors[0].shape[0], *dims))

    def __call__(self, inputs: Any, target: Any = None, **attribute_kwargs: Any) -> Any:
        if isinstance(inputs, list):
            inputs = tuple(inputs)
        with ModelGuard(self.model, mode=self.guard):
            if self.validate:
                self._check(inputs, target, attribute_kwargs)
            if self.enhancer is None:
                out = self.explainer(self.model, inputs, target, **attribute_kwargs)
            else:
                out = self.enhancer(self.explainer, self.model, inputs, target, **attribute_kwargs)
        return out

    def __repr__(self) -> str:
        enh = f", enhancer={self.enhancer!r}" if self.enhancer is not None else ""
        return f"Explain({type(self.model).__name__}, {self.explainer!r}{enh})"


def wrap(
    model: nn.Module,
    method: Any,
    /,
    enhancer: Any = None,
    *,
    layer: Any = None,
    interpolate: bool | str = False,
    guard: str = "restore",
    validate: bool = True,
    calibration: Any = None,
    calibrator: str | None = None,
    calibration_options: dict[str, Any] | None = None,
    registry: Registry | None = None,
    **options: Any,
) -> Explain:
    """Wrap a model and an attribution method into ``explain(inputs, target=None, **kwargs)``.

    Example::

        import wrapgrad
        explain = wrapgrad.wrap(model, "integrated_gradients", enhancer="fusiongrad")
        attributions = explain(x, target=y)

    ``model`` and ``method`` are positional-only, so Captum options of the same name (such as
    Integrated Gradients' ``method="gausslegendre"``) pass through ``**options``.

    Args:
        model: any ``torch.nn.Module``; it is never mutated (see :class:`ModelGuard`).
        method: a registered method name (every Captum attribution class by snake_case name:
            ``"saliency"``, ``"integrated_gradients"``, ``"deep_lift"``, ``"layer_grad_cam"``, ...),
            a Captum attribution class, a constructed Captum object, or a callable
            ``(model, inputs, target, **kw) -> attributions``.
        enhancer: None, a registered enhancer name (``"smoothgrad"``, ``"noisegrad"``, ...), or an
            Enhancer object.
        layer: for layer and neuron methods: a module of ``model``, its dotted name, or a list.
        interpolate: for layer methods, resize the map to the inputs' spatial size (``True`` or an
            interpolation mode).
        guard: what to do if a call changes the model: ``"restore"`` (restore and warn),
            ``"verify"`` (restore and raise), ``"silent"`` (restore).
        validate: check inputs and target before each call (one extra forward pass per new input
            shape when a target is given).
        calibration: held-out ``(inputs, labels)`` tensors or a DataLoader; needed when an
            enhancer's noise level is ``"auto"`` (``sigma="auto"``, ``noise_level="auto"``): the
            level is then chosen by :func:`wrapgrad.calibrate` so that the relative accuracy drop
            is 5 % (Bykov et al. 2022). The record is kept as ``explain.calibration``.
        calibrator: the calibrator for ``"auto"`` levels: default ``"accuracy_drop"`` for one noise,
            ``"halve"`` for FusionGrad (both levels halved); ``"noisegrad++"`` is the alternative.
        calibration_options: options for the calibrator (``target_drop``, ``draws``, ``seed``, ...).
        registry: the plugin registry to resolve names in (default: the process-wide one).
        **options: the enhancer's options (``n_samples``, ``sigma``, ``seed``, ...), then the
            method's constructor options (``multiply_by_inputs``, ...) and ``attribute`` defaults
            (``n_steps``, ``baselines``, ...). An option nobody takes raises an error naming it.

    Returns:
        An :class:`Explain` callable.
    """
    if not isinstance(model, nn.Module):
        raise WrapgradTypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if guard not in ("restore", "verify", "silent"):
        raise WrapgradValueError(f"guard: expected 'restore', 'verify' or 'silent', got {guard!r}")
    reg = registry or get_registry()
    enhancer_options: dict[str, Any] = {}
    enhancer_names: set[str] = set()
    enhancer_factory = None
    if isinstance(enhancer, str):
        spec = reg.get("enhancer", enhancer, argument="enhancer")
        enhancer_factory = spec.factory
        enhancer_names, _ = _factory_parameters(spec.factory)
        enhancer_options = {k: v for k, v in options.items() if k in enhancer_names}
    elif enhancer is not None and not callable(enhancer):
        raise WrapgradTypeError(
            f"enhancer: expected None, an enhancer name or an Enhancer object, got "
            f"{type(enhancer).__name__}"
        )
    method_options = {k: v for k, v in options.items() if k not in enhancer_options}
    try:
        explainer = build_explainer(
            method, layer=layer, interpolate=interpolate, options=method_options, registry=reg
        )
    except UnknownNameError as exc:
        if exc.argument != "options":
            raise
        known = set(exc.known) | enhancer_names | _WRAP_OPTIONS
        raise UnknownNameError("options", exc.name, known, what="option") from None
    if isinstance(layer, str) or (
        isinstance(layer, (list, tuple)) and any(isinstance(x, str) for x in layer)
    ):
        from wrapgrad.captum_adapter import resolve_layer

        resolve_layer(model, layer)  # fail now, not at the first call
    record = None
    if any(isinstance(v, str) and v == "auto" for v in enhancer_options.values()):
        record = _calibrate_auto(
            model, enhancer_options, enhancer_names, calibration, calibrator, calibration_options
        )
    elif calibration is not None:
        raise WrapgradValueError(
            "calibration: data is used only for noise levels set to 'auto' "
            "(e.g. sigma='auto'); none is"
        )
    enhancer_obj = enhancer_factory(**enhancer_options) if enhancer_factory else enhancer
    explain = Explain(model, explainer, enhancer_obj, guard=guard, validate=validate)
    explain.calibration = record
    return explain


_AUTO_LEVELS = {"sigma": "weight", "noise_level": "input"}


def _calibrate_auto(
    model: nn.Module,
    enhancer_options: dict[str, Any],
    enhancer_names: set[str],
    data: Any,
    calibrator: str | None,
    calibration_options: dict[str, Any] | None,
) -> Any:
    """Replace ``"auto"`` noise levels in ``enhancer_options`` (in place) by calibrated ones."""
    from wrapgrad.calibration import calibrate

    auto = [k for k, v in enhancer_options.items() if isinstance(v, str) and v == "auto"]
    unknown = [k for k in auto if k not in _AUTO_LEVELS]
    if unknown:
        raise WrapgradValueError(
            f"{unknown[0]}: 'auto' applies to the noise levels sigma and noise_level only"
        )
    if data is None:
        raise WrapgradValueError(
            f"{auto[0]}: '{auto[0]}=\"auto\"' needs calibration data: pass "
            f"calibration=(inputs, labels) (held-out tensors) or a DataLoader"
        )
    opts = dict(calibration_options or {})
    if "seed" in enhancer_options and "seed" not in opts:
        opts["seed"] = enhancer_options["seed"]
    fusion = set(_AUTO_LEVELS) <= enhancer_names
    if fusion:
        record = calibrate(model, data, calibrator=calibrator or "halve", **opts)
        levels = {"sigma": record.sigma, "noise_level": record.alpha}
    else:
        (key,) = auto
        record = calibrate(
            model,
            data,
            perturber=_AUTO_LEVELS[key],
            calibrator=calibrator or "accuracy_drop",
            **opts,
        )
        levels = {key: record.sigma}
    for key in auto:
        enhancer_options[key] = levels[key]
    return record
