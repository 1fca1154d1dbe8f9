"""``wrapgrad.wrap`` (module ``wrapgrad.wrapping``): a model and a method (plus an enhancer) -> ``explain``."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Mapping
from typing import Any

import attrs
from torch import Tensor, nn

from wrapgrad.adapters import AdaptedExplainer, select_output
from wrapgrad.captum_adapter import (
    BoundExplainer,
    CaptumExplainer,
    FunctionExplainer,
    snake_case,
)
from wrapgrad.checks import (
    as_input_tuple,
    check_finite,
    check_inputs,
    check_seed,
    check_target,
    probe_output,
)
from wrapgrad.engine.rng import make_generator, seeded_global_rng
from wrapgrad.errors import UnknownNameError, WrapgradTypeError, WrapgradValueError
from wrapgrad.functional import model_device
from wrapgrad.guard import GUARD_MODES, ModelGuard
from wrapgrad.options import Part, accepted, route
from wrapgrad.records import ExplainerTraits, traits_of
from wrapgrad.registry import Registry, get_registry, use_registry

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
    "method_options",
    "enhancer_options",
}

_COLLISION_HINT = "pass it in method_options={...} or enhancer_options={...}"


def _method_part(method: Any) -> Part:
    """The options a method takes (constructor and ``attribute`` options for Captum methods)."""
    from captum.attr import Attribution

    if isinstance(method, _DifferentiableMethod):
        from wrapgrad.differentiable import KERNELS

        names, open_ = accepted(KERNELS[method.name])
        exclude = {"model", "inputs", "target", "create_graph"}
        return Part(f"method {method.name!r}", names - exclude, open_)
    if isinstance(method, str):
        spec = get_registry().get("explainer", method, argument="method")
        names, open_ = spec.option_names()
        return Part(f"method {spec.name!r}", names - {"layer", "interpolate"}, open_)
    if isinstance(method, Attribution) or (
        inspect.isclass(method) and issubclass(method, Attribution)
    ):
        names, open_ = CaptumExplainer.option_names(method)
        klass = method if inspect.isclass(method) else type(method)
        return Part(f"method {snake_case(klass.__name__)!r}", names, open_)
    if callable(method) and not inspect.isclass(method):
        names, open_ = accepted(method)
        label = getattr(method, "__name__", type(method).__name__)
        return Part(f"method {label!r}", names - {"model", "inputs", "target"}, open_)
    return Part("method", ())


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
    Captum methods); an option the method does not take raises :class:`UnknownNameError`
    (``argument == "options"``).
    """
    from captum.attr import Attribution

    options = dict(options or {})
    if isinstance(method, _DifferentiableMethod):
        from wrapgrad.differentiable import DifferentiableExplainer

        return DifferentiableExplainer(method.name, **options)
    with use_registry(registry):
        if isinstance(method, str):
            spec = get_registry().get("explainer", method, argument="method")
            kwargs = dict(options)
            if layer is not None:
                kwargs["layer"] = layer
            if interpolate:
                kwargs["interpolate"] = interpolate
            names, open_ = spec.option_names()
            if not open_:
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
    """The callable :func:`wrap` returns:
    ``explain(inputs, target=None, *, forward_kwargs=None, **attribute_kwargs)``.

    Every call validates the inputs and target, runs the explainer (through the enhancer, if
    any) inside a :class:`~wrapgrad.guard.ModelGuard`, and returns attributions as torch
    tensors of the inputs' shape (a tuple for tuple inputs) on the inputs' device; layer methods
    return what Captum returns for the layer (or the resized map with ``interpolate=``).

    ``inputs`` may be a dict of keyword tensors (``{"input_ids": ids}``): they are passed to the
    model by name and the maps come back as a dict with the same keys. ``forward_kwargs`` are
    further keyword arguments of the model that are not explained (``attention_mask``, ...);
    batch-first tensors among them travel with the batch through Captum and the enhancers.

    Attributes:
        model: the wrapped model (never mutated).
        explainer: the attribution method as an Explainer.
        enhancer: the enhancer, or None.
        output: the output selector (see :mod:`wrapgrad.adapters`).
    """

    def __init__(
        self,
        model: nn.Module,
        explainer: Any,
        enhancer: Any = None,
        *,
        guard: str = "check",
        validate: bool = True,
        output: Any = None,
        seed: int | None = None,
    ) -> None:
        self.model = model
        self.explainer = explainer
        self.enhancer = enhancer
        self.guard = guard
        self.validate = validate
        self.output = output
        self.seed = check_seed(seed)
        """Without an enhancer, for a method that draws random numbers itself (Lime, KernelShap,
        GradientShap, ...): the seed of its draws. ``None``: it draws from the global RNGs as
        it would called from Captum directly (the same global seed gives Captum's maps)."""
        self.calibration: Any = None
        """The calibration record when a noise level was ``"auto"`` (see :func:`wrap`)."""
        self._output_shapes: dict[tuple[Any, ...], tuple[tuple[int, ...], bool]] = {}

    @property
    def traits(self) -> ExplainerTraits:
        """What the explainer can do (see :class:`~wrapgrad.records.ExplainerTraits`)."""
        return traits_of(self.explainer)

    @property
    def family(self) -> str:
        return self.traits.family

    def _check(self, inputs: Any, target: Any, kwargs: dict[str, Any], adapted: Any) -> None:
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
            dims = self._probe(tensors, kwargs.get("additional_forward_args"), adapted)[0]
            check_target(target, (tensors[0].shape[0], *dims))

    def _probe(
        self, tensors: tuple[Tensor, ...], extra: Any, adapted: AdaptedExplainer
    ) -> tuple[tuple[int, ...], bool]:
        """``(output dims, whether the model itself returns a tensor)`` for inputs like
        ``tensors``: one forward pass per input signature (cached when there are no extra
        arguments), without gradients or random numbers."""
        key = tuple((tuple(t.shape[1:]), t.dtype, t.device) for t in tensors)
        found = self._output_shapes.get(key) if extra is None else None
        if found is None:
            raw = probe_output(adapted.view(self.model, select=False), tensors, extra, raw=True)
            selected = select_output(raw, self.output)
            found = (tuple(selected.shape[1:]), isinstance(raw, Tensor))
            if extra is None:
                self._output_shapes[key] = found
        return found

    def __call__(
        self,
        inputs: Any,
        target: Any = None,
        *,
        forward_kwargs: Mapping[str, Any] | None = None,
        **attribute_kwargs: Any,
    ) -> Any:
        if isinstance(inputs, list):
            inputs = tuple(inputs)
        names: tuple[str, ...] = ()
        if isinstance(inputs, Mapping):
            names, inputs = _keyword_inputs(inputs)
        extra_names: tuple[str, ...] = ()
        if forward_kwargs is not None:
            extra_names, attribute_kwargs = _with_forward_kwargs(
                forward_kwargs, attribute_kwargs, keyword_inputs=bool(names)
            )
        adapted = AdaptedExplainer(
            self.explainer, output=self.output, input_names=names, extra_names=extra_names
        )
        with ModelGuard(self.model, mode=self.guard):
            if self.validate:
                self._check(inputs, target, attribute_kwargs, adapted)
            explainer: Any = adapted
            if self.output is None and not (names or extra_names):
                # A model returning a tensor is handed to the explainer as it is.
                tensors, _ = as_input_tuple(inputs)
                extra = attribute_kwargs.get("additional_forward_args")
                if not self.validate or self._probe(tensors, extra, adapted)[1]:
                    explainer = self.explainer
            if self.enhancer is None:
                with self._own_draws(inputs):
                    out = explainer(self.model, inputs, target, **attribute_kwargs)
            else:
                out = self.enhancer(explainer, self.model, inputs, target, **attribute_kwargs)
        if names:
            maps = out if isinstance(out, (tuple, list)) else (out,)
            return dict(zip(names, maps, strict=True))
        return out

    def _own_draws(self, inputs: Any) -> Any:
        """With a ``seed``, for a method that draws random numbers itself (its traits say
        ``stochastic``): its draws come from the global RNGs (torch's, NumPy's, Python's) seeded
        from ``seed``, and the caller's RNG states are given back afterwards, as inside an
        enhancer."""
        if self.seed is None or not self.traits.stochastic:
            return contextlib.nullcontext()
        device = as_input_tuple(inputs)[0][0].device
        return seeded_global_rng(make_generator(device, seed=self.seed), device, True)

    def __repr__(self) -> str:
        enh = f", enhancer={self.enhancer!r}" if self.enhancer is not None else ""
        return f"Explain({type(self.model).__name__}, {self.explainer!r}{enh})"


def _keyword_inputs(inputs: Mapping[str, Any]) -> tuple[tuple[str, ...], Any]:
    """Names and tensors of keyword inputs (one tensor alone, several as a tuple)."""
    if not inputs:
        raise WrapgradValueError("inputs: expected at least one keyword tensor, got an empty dict")
    for key, value in inputs.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise WrapgradTypeError(
                f"inputs: expected a dict of keyword name -> tensor, got {key!r}: "
                f"{type(value).__name__}"
            )
    names = tuple(inputs)
    values = tuple(inputs.values())
    return names, values[0] if len(values) == 1 else values


def _with_forward_kwargs(
    forward_kwargs: Mapping[str, Any], attribute_kwargs: dict[str, Any], *, keyword_inputs: bool
) -> tuple[tuple[str, ...], dict[str, Any]]:
    """``forward_kwargs`` appended to ``additional_forward_args`` (so Captum and the engine tile
    them with the batch), and their names."""
    if not isinstance(forward_kwargs, Mapping) or not all(
        isinstance(k, str) for k in forward_kwargs
    ):
        raise WrapgradTypeError(
            f"forward_kwargs: expected a dict of the model's keyword arguments, got "
            f"{type(forward_kwargs).__name__}"
        )
    extra = attribute_kwargs.get("additional_forward_args")
    if extra is not None and keyword_inputs:
        raise WrapgradValueError(
            "additional_forward_args: with keyword inputs (a dict), pass the model's other "
            "arguments by name in forward_kwargs"
        )
    if extra is None:
        extra = ()
    elif not isinstance(extra, tuple):
        extra = (extra,)
    kwargs = dict(attribute_kwargs)
    kwargs["additional_forward_args"] = (*extra, *forward_kwargs.values())
    return tuple(forward_kwargs), kwargs


def wrap(
    model: nn.Module,
    method: Any,
    /,
    enhancer: Any = None,
    *,
    layer: Any = None,
    interpolate: bool | str = False,
    guard: str = "check",
    validate: bool = True,
    calibration: Any = None,
    calibrator: str | None = None,
    calibration_options: dict[str, Any] | None = None,
    method_options: dict[str, Any] | None = None,
    enhancer_options: dict[str, Any] | None = None,
    output: Any = None,
    create_graph: bool = False,
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
        guard: how the model is kept unchanged (:class:`~wrapgrad.guard.ModelGuard`):
            ``"check"`` (default: no copy of the weights; flags, hooks and identities restored,
            an in-place weight change raises :class:`~wrapgrad.errors.ModelMutatedError`),
            ``"restore"`` (a full value snapshot per call: restore and warn), ``"verify"``
            (snapshot, restore and raise), ``"silent"`` (snapshot, restore).
        validate: check inputs and target before each call (one extra forward pass per new input
            shape when a target is given).
        calibration: held-out ``(inputs, labels)`` tensors or a DataLoader; needed when an
            enhancer's noise level is ``"auto"`` (``sigma="auto"``, ``noise_level="auto"``): the
            level is then chosen by :func:`wrapgrad.calibrate` so that the relative accuracy drop
            is 5 % (Bykov et al. 2022). The record is kept as ``explain.calibration``.
        calibrator: the calibrator for ``"auto"`` levels (default: the one the enhancer's spec
            names, e.g. ``"halve"`` for FusionGrad, else ``"accuracy_drop"``).
        calibration_options: options for the calibrator (``target_drop``, ``draws``, ``seed``, ...).
        method_options: options for the method only (use when the enhancer takes an option of
            the same name, e.g. GradientShap's and SmoothGrad's ``n_samples``).
        enhancer_options: options for the enhancer only.
        output: which tensor of the model's output is explained (Hugging Face ``ModelOutput``,
            dicts, tuples): ``None`` (default: a tensor as it is, else ``"logits"`` when present,
            else a tuple's first element), a key, an index, or a callable ``out -> tensor``
            (see :mod:`wrapgrad.adapters`).
        create_graph: return maps that keep the autograd graph to the inputs and the parameters,
            so a loss on them can be backpropagated (robust training, attacks). Needs a method
            with a differentiable kernel (``"saliency"``, ``"input_x_gradient"``,
            ``"integrated_gradients"``, see :mod:`wrapgrad.differentiable`, or any explainer whose
            traits say ``differentiable=True``) and, with an enhancer, one that takes
            ``create_graph`` (SmoothGrad, NoiseGrad, FusionGrad, VarGrad). Memory: the graph of
            every Monte-Carlo sample is kept until the backward pass.
        registry: the plugin registry to resolve every name in, calibration included (default:
            the current one, see :func:`wrapgrad.registry.use_registry`).
        **options: each goes to the part that takes it: the enhancer (``n_samples``, ``sigma``,
            ``seed``, ...), the method's constructor (``multiply_by_inputs``, ...) or its
            ``attribute`` defaults (``n_steps``, ``baselines``, ...). Without an enhancer,
            ``seed`` seeds a method that draws random numbers itself (Lime, KernelShap,
            GradientShap, ...): its maps repeat and the caller's global RNG states (torch's,
            NumPy's, Python's) are left as they were; without it, the method draws from the
            global RNGs as it does called from Captum directly. An option two parts take
            raises :class:`~wrapgrad.options.OptionCollisionError` naming both (give it in
            ``method_options`` or ``enhancer_options``); an option no part takes raises
            :class:`~wrapgrad.errors.UnknownNameError` with the closest names.

    Returns:
        An :class:`Explain` callable.
    """
    if not isinstance(model, nn.Module):
        raise WrapgradTypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if guard not in GUARD_MODES:
        raise WrapgradValueError(
            f"guard: expected one of {', '.join(repr(m) for m in GUARD_MODES)}, got {guard!r}"
        )
    for name, given in (("method_options", method_options), ("enhancer_options", enhancer_options)):
        if given is not None and not isinstance(given, dict):
            raise WrapgradTypeError(
                f"{name}: expected a dict of options, got {type(given).__name__}"
            )
    with use_registry(registry):
        return _wrap(
            model,
            method,
            enhancer,
            _Routing(options, method_options or {}, enhancer_options or {}),
            _WrapSettings(layer, interpolate, guard, validate, output, bool(create_graph)),
            _AutoCalibration(calibration, calibrator, calibration_options),
        )


@attrs.frozen
class _Routing:
    options: dict[str, Any]
    method: dict[str, Any]
    enhancer: dict[str, Any]


@attrs.frozen
class _WrapSettings:
    layer: Any
    interpolate: bool | str
    guard: str
    validate: bool
    output: Any
    create_graph: bool = False


@attrs.frozen
class _AutoCalibration:
    data: Any
    calibrator: str | None
    options: dict[str, Any] | None


def _wrap(
    model: nn.Module,
    method: Any,
    enhancer: Any,
    routing: _Routing,
    settings: _WrapSettings,
    auto: _AutoCalibration,
) -> Explain:
    spec = None
    if isinstance(enhancer, str):
        spec = get_registry().get("enhancer", enhancer, argument="enhancer")
        names, open_ = spec.option_names()
        enhancer_part = Part(f"enhancer {spec.name!r}", names, open_)
    elif enhancer is not None and not callable(enhancer):
        raise WrapgradTypeError(
            f"enhancer: expected None, an enhancer name or an Enhancer object, got "
            f"{type(enhancer).__name__}"
        )
    else:
        enhancer_part = Part("enhancer", ())
        if routing.enhancer:
            raise WrapgradValueError(
                "enhancer_options: options for an enhancer need enhancer= a registered name"
            )
    if settings.create_graph:
        method = _differentiable_method(method, settings)
        if spec is not None:
            if "create_graph" not in spec.option_names()[0]:
                raise WrapgradValueError(
                    f"create_graph: the enhancer {spec.name!r} cannot keep a graph (it takes no "
                    f"create_graph option)"
                )
            routing = _Routing(
                routing.options, routing.method, {**routing.enhancer, "create_graph": True}
            )
    method_part = _method_part(method)
    plain_seed = None
    if (
        enhancer is None
        and "seed" in routing.options
        and "seed" not in method_part.names
        and not method_part.open  # a callable's **kw takes seed as any other option
    ):
        # Without an enhancer, seed= seeds a method that draws itself (checked once built).
        options = dict(routing.options)
        plain_seed = check_seed(options.pop("seed"))
        routing = _Routing(options, routing.method, routing.enhancer)
    routed = route(
        routing.options,
        [enhancer_part, method_part],
        explicit={enhancer_part.label: routing.enhancer, method_part.label: routing.method},
        extra_known=_WRAP_OPTIONS,
        hint=_COLLISION_HINT,
    )
    enhancer_options = routed[enhancer_part.label]
    explainer = build_explainer(
        method,
        layer=settings.layer,
        interpolate=settings.interpolate,
        options=routed[method_part.label],
    )
    if plain_seed is not None and not traits_of(explainer).stochastic:
        raise WrapgradValueError(
            f"seed: {traits_of(explainer).name} draws no random numbers, so there is nothing "
            f"to seed; seed= goes to an enhancer (enhancer=...) or to a method that draws its "
            f"own (lime, kernel_shap, gradient_shap, shapley_value_sampling, ...)"
        )
    if settings.layer is not None:
        from wrapgrad.captum_adapter import resolve_layer

        resolve_layer(model, settings.layer)  # fail now, not at the first call
    record = None
    if any(isinstance(v, str) and v == "auto" for v in enhancer_options.values()):
        record = _calibrate_auto(model, spec, enhancer_options, auto)
    elif auto.data is not None:
        raise WrapgradValueError(
            "calibration: data is used only for noise levels set to 'auto' "
            "(e.g. sigma='auto'); none is"
        )
    enhancer_obj = spec.factory(**enhancer_options) if spec is not None else enhancer
    if settings.output is not None and not (
        callable(settings.output) or isinstance(settings.output, (str, int))
    ):
        raise WrapgradTypeError(
            f"output: expected None, a key, an index or a callable, got "
            f"{type(settings.output).__name__}"
        )
    explain = Explain(
        model,
        explainer,
        enhancer_obj,
        guard=settings.guard,
        validate=settings.validate,
        output=settings.output,
        seed=plain_seed,
    )
    explain.calibration = record
    return explain


def _differentiable_method(method: Any, settings: _WrapSettings) -> Any:
    """The explainer to use with ``create_graph=True``: the differentiable kernel of a named or
    Captum method, or a callable explainer whose traits say it is differentiable."""
    from captum.attr import Attribution

    from wrapgrad.differentiable import KERNELS, DifferentiableExplainer

    known = ", ".join(sorted(KERNELS))
    if settings.layer is not None or settings.interpolate:
        raise WrapgradValueError(
            f"create_graph: layer methods cannot keep a graph; methods that can: {known}"
        )
    name = None
    if isinstance(method, str):
        name = get_registry().get("explainer", method, argument="method").name
    elif inspect.isclass(method) and issubclass(method, Attribution):
        name = snake_case(method.__name__)
    elif isinstance(method, DifferentiableExplainer):
        return method
    elif callable(method) and not inspect.isclass(method):
        if traits_of(method).differentiable:
            return method
        raise WrapgradValueError(
            f"create_graph: the explainer {traits_of(method).name!r} does not declare "
            f"differentiable=True in its traits; methods that can: {known}"
        )
    if name not in KERNELS:
        raise WrapgradValueError(
            f"create_graph: {name or type(method).__name__!r} cannot keep a graph; methods "
            f"that can: {known}"
        )
    return _DifferentiableMethod(name)


class _DifferentiableMethod:
    """Marks a method name to be built as its differentiable kernel (options by its signature)."""

    def __init__(self, name: str) -> None:
        self.name = name


def _calibrate_auto(
    model: nn.Module, spec: Any, enhancer_options: dict[str, Any], auto: _AutoCalibration
) -> Any:
    """Replace ``"auto"`` noise levels in ``enhancer_options`` (in place) by calibrated ones.

    Which options are noise levels, of which perturber, and which calibrator chooses them
    together is declared by the enhancer's spec (:class:`~wrapgrad.records.EnhancerSpec`
    ``levels`` and ``calibrator``)."""
    from wrapgrad.calibration import calibrate, levels_of

    targets = spec.level_targets()
    auto_keys = [k for k, v in enhancer_options.items() if isinstance(v, str) and v == "auto"]
    unknown = [k for k in auto_keys if k not in targets]
    if unknown:
        levels = " and ".join(sorted(targets)) or "none"
        raise WrapgradValueError(
            f"{unknown[0]}: 'auto' applies to the noise levels of {spec.name} only ({levels})"
        )
    if auto.data is None:
        raise WrapgradValueError(
            f"{auto_keys[0]}: '{auto_keys[0]}=\"auto\"' needs calibration data: pass "
            f"calibration=(inputs, labels) (held-out tensors) or a DataLoader"
        )
    opts = dict(auto.options or {})
    if "seed" in enhancer_options and "seed" not in opts:
        opts["seed"] = enhancer_options["seed"]
    calibrator = auto.calibrator or spec.calibrator or "accuracy_drop"
    if len(targets) > 1:
        # The levels are chosen together (e.g. FusionGrad's halving heuristic), also when only
        # one of them is "auto"; the other keeps the value given.
        record = calibrate(model, auto.data, calibrator=calibrator, **opts)
        found = levels_of(record)
    else:
        ((key, target),) = targets.items()
        record = calibrate(model, auto.data, perturber=target, calibrator=calibrator, **opts)
        found = levels_of(record)
    for key in auto_keys:
        if found.get(targets[key]) is None:
            raise WrapgradValueError(
                f"{key}: the calibrator {calibrator!r} found no {targets[key]} noise level"
            )
        enhancer_options[key] = found[targets[key]]
    return record
