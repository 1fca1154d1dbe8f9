"""Any Captum attribution method as a model-agnostic :class:`~wrapgrad.protocols.Explainer`.

Captum binds an attribution object to one model at construction. wrapgrad's explainers take the
model at call time instead (enhancers evaluate the method on functional views of the model with
perturbed weights), so :class:`CaptumExplainer` keeps the *class* and the construction options and
builds the Captum object for the model it is called with. A Captum object the user constructed
is used as it is for the model it was built for, and re-pointed (shallow copy) at other models.
"""

from __future__ import annotations

import copy
import inspect
import re
import warnings
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from wrapgrad.errors import UnknownNameError, WrapgradTypeError, WrapgradValueError
from wrapgrad.functional import FunctionalView
from wrapgrad.options import accepted
from wrapgrad.records import ExplainerTraits, traits_of

__all__ = [
    "BoundExplainer",
    "CaptumExplainer",
    "FunctionExplainer",
    "captum_classes",
    "interpretable_model",
    "method_info",
    "method_traits",
    "resolve_layer",
    "snake_case",
]

#: Captum classes that wrap another attribution object, or are abstract; they are not
#: offered by name (pass a constructed object instead).
_NOT_BY_NAME = {
    "Attribution",
    "GradientAttribution",
    "PerturbationAttribution",
    "LayerAttribution",
    "NeuronAttribution",
    "NoiseTunnel",
    "LLMAttribution",
    "LLMGradientAttribution",
    "RemoteLLMAttribution",
    "DataLoaderAttribution",
    "LimeBase",
}

#: Methods that draw random numbers themselves.
_STOCHASTIC = {
    "Lime",
    "KernelShap",
    "ShapleyValueSampling",
    "FeaturePermutation",
    "LayerFeaturePermutation",
    "GradientShap",
    "LayerGradientShap",
    "NeuronGradientShap",
}

#: Subclasses of a stochastic method that draw nothing: exact Shapley values enumerate every
#: permutation of the features (ShapleyValueSampling draws some of them).
_DETERMINISTIC = {"ShapleyValues"}

#: Methods whose ``baselines`` are a distribution of reference inputs (DeepLiftShap averages
#: DeepLift over all of them and needs at least two; GradientShap draws from them).
_BASELINE_DISTRIBUTION = {
    "DeepLiftShap",
    "LayerDeepLiftShap",
    "NeuronDeepLiftShap",
    "GradientShap",
    "LayerGradientShap",
    "NeuronGradientShap",
}

#: Input-level methods that work through module hooks (and therefore cannot be vmap-ed).
_HOOKED = {"DeepLift", "DeepLiftShap", "GuidedBackprop", "Deconvolution", "LRP", "GuidedGradCam"}

#: Captum classes whose forward passes are plain differentiable calls (no hooks, no per-example
#: loops), with how they lay out an expanded batch (:data:`wrapgrad.records.VMAP_LAYOUTS`).
_VMAP_LAYOUT = {
    "Saliency": "block",
    "InputXGradient": "block",
    "IntegratedGradients": "block",
    "GradientShap": "interleave",
}


#: Captum classes that select the target twice: Captum 0.9's LayerFeaturePermutation runs the
#: model with the target selected inside the forward function it hands FeatureAblation, which
#: selects the target again from that 1-D result and fails ("Output must be 2D to select tensor
#: of targets"). For them the target is selected in the forward function alone (Captum's own
#: advice at ``_select_targets``) and ``attribute`` gets none: :func:`_target_in_forward`.
_TARGET_IN_FORWARD = {"LayerFeaturePermutation"}

#: Captum's notices that say nothing about the user's call: it sets hooks it will remove
#: (DeepLift, GuidedBackprop, ...; wrapgrad's guard makes sure), and Lime / KernelShap advise one
#: example per call (wrapgrad explains batches by design; each example still gets its own
#: interpretable model, as the notice says).
_CAPTUM_NOTICES = (
    r"Setting forward, backward hooks and attributes on non-linear",
    r"Setting backward hooks on ReLU activations",
    r"You are providing multiple inputs for Lime / Kernel SHAP",
)


def quiet_captum_notices() -> None:
    """Ignore Captum's notices about its own workings (:data:`_CAPTUM_NOTICES`), not about the
    call, in the current warnings filters; callers put the filters back (``catch_warnings``).
    Threads share one filter list, so code that explains on several threads calls it once
    around them as well."""
    for message in _CAPTUM_NOTICES:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)


def _detached(out: Any) -> Any:
    if isinstance(out, Tensor):
        return out.detach()
    if isinstance(out, (tuple, list)):
        return type(out)(_detached(t) for t in out)
    return out


def _requiring_grad(inputs: Any) -> Any:
    """Floating inputs that do not require gradients as detached views that do (no copy), so
    Captum neither warns ("did not already require gradients") nor touches the caller's
    tensors' flags."""

    def one(t: Any) -> Any:
        if isinstance(t, Tensor) and t.is_floating_point() and not t.requires_grad:
            return t.detach().requires_grad_(True)
        return t

    if isinstance(inputs, tuple):
        out = tuple(one(t) for t in inputs)
        return inputs if all(a is b for a, b in zip(out, inputs, strict=True)) else out
    return one(inputs)


def _target_in_forward(obj: Any, target: Any) -> tuple[Any, Any]:
    """``(object, target)`` for ``obj.attribute``: for the classes of :data:`_TARGET_IN_FORWARD`
    a shallow copy of ``obj`` whose forward function returns the target's outputs only, and no
    target; others unchanged. The same attributions Captum defines: the forward function
    returns what ``_select_targets(model(x), target)`` would."""
    if target is None or type(obj).__name__ not in _TARGET_IN_FORWARD:
        return obj, target
    from captum._utils.common import _select_targets

    forward = obj.forward_func

    def selected(*args: Any, **kwargs: Any) -> Tensor:
        return _select_targets(forward(*args, **kwargs), target)

    fixed = copy.copy(obj)
    fixed.forward_func = selected
    return fixed, None


def snake_case(name: str) -> str:
    """``"IntegratedGradients"`` -> ``"integrated_gradients"``, ``"LayerLRP"`` -> ``"layer_lrp"``."""
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    s = re.sub(r"(?<=[A-Z])([A-Z][a-z])", r"_\1", s)
    return s.lower()


def captum_classes() -> dict[str, type]:
    """Every concrete attribution class of ``captum.attr``, by snake_case name."""
    import captum.attr as ca
    from captum.attr import Attribution

    out = {}
    for cls_name in dir(ca):
        obj = getattr(ca, cls_name)
        if (
            inspect.isclass(obj)
            and issubclass(obj, Attribution)
            and cls_name not in _NOT_BY_NAME
            and not inspect.isabstract(obj)
        ):
            out[snake_case(cls_name)] = obj
    return out


def method_info(cls: type) -> dict[str, Any]:
    """What wrapgrad needs to know of a Captum class: family, hooks, randomness, gradients
    (see :func:`method_traits` for the record the engine reads)."""
    from captum.attr import LayerAttribution, NeuronAttribution

    names = {c.__name__ for c in cls.__mro__}
    if issubclass(cls, NeuronAttribution):
        family = "neuron"
    elif issubclass(cls, LayerAttribution):
        family = "layer"
    else:
        family = "attribution"
    init = inspect.signature(cls.__init__).parameters
    return {
        "family": family,
        "needs_layer": "layer" in init,
        "uses_hooks": family != "attribution" or bool(names & _HOOKED),
        "stochastic": bool(names & _STOCHASTIC) and not names & _DETERMINISTIC,
        "perturbation": "PerturbationAttribution" in names,
        "vmap_layout": _VMAP_LAYOUT.get(cls.__name__),
        "takes_target": "target" in accepted(cls.attribute)[0],
        "baseline_distribution": bool(names & _BASELINE_DISTRIBUTION),
    }


def method_traits(cls: type) -> ExplainerTraits:
    """The :class:`~wrapgrad.records.ExplainerTraits` of a Captum attribution class."""
    info = method_info(cls)
    return ExplainerTraits(
        name=snake_case(cls.__name__),
        family=info["family"],
        uses_hooks=info["uses_hooks"],
        stochastic=info["stochastic"],
        requires_grad_inputs=info["family"] == "attribution" and not info["perturbation"],
        vmap_layout=None if info["uses_hooks"] else info["vmap_layout"],
        takes_target=info["takes_target"],
        baseline_distribution=info["baseline_distribution"],
    )


def _root(model: Any) -> Any:
    """The user's model under wrapgrad's views (functional and adapted)."""
    from wrapgrad.adapters import AdaptedView

    while isinstance(model, (FunctionalView, AdaptedView)):
        model = model.model
    return model


def resolve_layer(model: Any, layer: Any, argument: str = "layer") -> Any:
    """A module (or list of modules) of ``model`` from a module, a dotted name, or a list of either."""
    if layer is None:
        return None
    if isinstance(layer, (list, tuple)):
        return [resolve_layer(model, item, f"{argument}[{i}]") for i, item in enumerate(layer)]
    if isinstance(layer, nn.Module):
        root = _root(model)
        if isinstance(root, nn.Module) and not any(m is layer for m in root.modules()):
            # Captum's hook on it would never fire: a bare AssertionError at the first call.
            raise WrapgradValueError(
                f"{argument}: expected a module of the model (or its dotted name), got a "
                f"{type(layer).__name__} that is not one of its modules (a layer of another "
                f"model, or of a copy of it?)"
            )
        return layer
    if isinstance(layer, str):
        root = _root(model)
        if not isinstance(root, nn.Module):
            raise WrapgradTypeError(
                f"{argument}: a layer name needs an nn.Module model, got {type(root).__name__}"
            )
        try:
            if not layer:
                raise AttributeError(layer)
            return root.get_submodule(layer)
        except AttributeError:
            names = [n for n, _ in root.named_modules() if n]
            raise UnknownNameError(argument, layer, names, what="layer") from None
    raise WrapgradTypeError(
        f"{argument}: expected a module, its dotted name, or a list of them, got "
        f"{type(layer).__name__}"
    )


def interpretable_model(value: Any) -> Any:
    """Lime's ``interpretable_model`` option: a Captum interpretable model as it is, or the path
    of a scikit-learn estimator under ``sklearn`` (Captum's convention, e.g.
    ``"linear_model.LinearRegression"`` or ``"linear_model.Ridge"``) as a new
    ``captum._utils.models.linear_model.SkLearnLinearModel`` of it, so that pipeline files (and
    smoke caps) can name one, whether Lime is given by name or as its class."""
    if not isinstance(value, str):
        return value
    import importlib

    module, _, name = value.rpartition(".")
    try:
        estimator = getattr(importlib.import_module(f"sklearn.{module}"), name, None)
    except ImportError:
        estimator = None
    if not module or not isinstance(estimator, type) or not hasattr(estimator, "fit"):
        raise WrapgradValueError(
            "interpretable_model: expected a Captum interpretable model or the path of a "
            "scikit-learn estimator under sklearn, such as 'linear_model.LinearRegression', "
            f"got {value!r}"
        )
    from captum._utils.models.linear_model import SkLearnLinearModel

    return SkLearnLinearModel(value)


class CaptumExplainer:
    """A Captum attribution class as an Explainer.

    Its maps are detached (Captum's gradients carry no graph, and layer and neuron maps would
    otherwise hold the forward pass's); ``create_graph=True`` is refused: differentiable maps
    come from :mod:`wrapgrad.differentiable` (``wrap(..., create_graph=True)``).

    Args:
        method: a Captum attribution class, or a constructed Captum attribution object.
        layer: for layer and neuron methods (and GuidedGradCam): a module, its dotted name, or a
            list of them where Captum accepts a list.
        init_options: keyword arguments for the class's constructor (``multiply_by_inputs``,
            ``interpretable_model``, ...).
        attribute_defaults: keyword arguments for every ``attribute`` call (``n_steps``,
            ``baselines``, ``sliding_window_shapes``, ...); call-time keywords override them.
        interpolate: for layer methods: ``False`` returns what Captum returns for the layer;
            ``True`` or an interpolation mode (``"nearest"``, ``"bilinear"``, ``"bicubic"``,
            ``"area"``) resizes the map to the inputs' spatial size (Captum's
            ``LayerAttribution.interpolate``; ``True`` means bilinear).
    """

    def __init__(
        self,
        method: Any,
        *,
        layer: Any = None,
        init_options: dict[str, Any] | None = None,
        attribute_defaults: dict[str, Any] | None = None,
        interpolate: bool | str = False,
    ) -> None:
        from captum.attr import Attribution

        if isinstance(method, Attribution):
            self.template: Attribution | None = method
            self.cls = type(method)
        elif inspect.isclass(method) and issubclass(method, Attribution):
            self.template = None
            self.cls = method
        else:
            raise WrapgradTypeError(
                f"method: expected a Captum attribution class or object, got {type(method).__name__}"
            )
        info = method_info(self.cls)
        self.traits: ExplainerTraits = method_traits(self.cls)
        self.family: str = self.traits.family
        self.needs_layer: bool = info["needs_layer"] and self.template is None
        self.name = self.traits.name
        self.layer = layer
        if self.template is None and self.needs_layer and layer is None:
            raise WrapgradValueError(
                f"layer: {self.cls.__name__} attributes to a layer; pass layer= (a module of the "
                f"model or its dotted name, e.g. layer='features.3')"
            )
        if not (self.needs_layer or self.template is not None) and layer is not None:
            raise WrapgradValueError(
                f"layer: {self.cls.__name__} does not take a layer, got {layer!r}"
            )
        self.init_options = dict(init_options or {})
        if self.init_options:
            if self.template is not None:
                raise WrapgradValueError(
                    f"options: {sorted(self.init_options)} configure a Captum constructor, but "
                    f"method is an already constructed {self.cls.__name__}"
                )
            allowed = self.init_parameters(self.cls)
            for key in self.init_options:
                if key not in allowed:
                    raise UnknownNameError(
                        "options", key, allowed, what=f"constructor option of {self.cls.__name__}"
                    )
        self.attribute_defaults = dict(attribute_defaults or {})
        if interpolate not in (
            False,
            True,
            "nearest",
            "bilinear",
            "bicubic",
            "area",
            "linear",
            "trilinear",
        ):
            raise WrapgradValueError(
                "interpolate: expected False, True or one of 'nearest', 'bilinear', 'bicubic', "
                f"'area', 'linear', 'trilinear', got {interpolate!r}"
            )
        if interpolate and self.family != "layer":
            raise WrapgradValueError(
                f"interpolate: only layer methods return maps of another size; "
                f"{self.cls.__name__} is not one"
            )
        self.interpolate = interpolate

    @classmethod
    def from_options(
        cls,
        method: Any,
        *,
        layer: Any = None,
        interpolate: bool | str = False,
        options: dict[str, Any] | None = None,
    ) -> CaptumExplainer:
        """Build from a flat dict of options, each sent to the constructor or to ``attribute``
        by the names their signatures take; an option neither takes raises
        :class:`UnknownNameError` (with ``argument == "options"``)."""
        from captum.attr import Attribution

        klass = type(method) if isinstance(method, Attribution) else method
        init_names = set() if isinstance(method, Attribution) else cls.init_parameters(klass)
        attr_names, attr_var_kw = cls.attribute_parameters_of(klass)
        init: dict[str, Any] = {}
        attribute: dict[str, Any] = {}
        for key, value in (options or {}).items():
            if key == "interpretable_model":  # Lime's: a path names a scikit-learn estimator
                value = interpretable_model(value)
            if key in init_names:
                init[key] = value
            elif key in attr_names or attr_var_kw:
                attribute[key] = value
            else:
                raise UnknownNameError(
                    "options", key, init_names | attr_names, what=f"option of {klass.__name__}"
                )
        return cls(
            method,
            layer=layer,
            init_options=init,
            attribute_defaults=attribute,
            interpolate=interpolate,
        )

    # -- introspection --------------------------------------------------------------------------
    @staticmethod
    def init_parameters(cls: type) -> set[str]:
        """The constructor options of a Captum class (the model and layer arguments excluded)."""
        names, _ = accepted(cls)
        return set(names) - {"forward_func", "model", "layer", "attribution_method"}

    @staticmethod
    def attribute_parameters_of(cls: type) -> tuple[set[str], bool]:
        """The ``attribute`` options of a Captum class (``inputs``/``target`` excluded), and
        whether it takes ``**kwargs``."""
        names, open_ = accepted(cls.attribute)
        return set(names) - {"inputs", "target"}, open_

    @classmethod
    def option_names(cls, method: Any) -> tuple[frozenset[str], bool]:
        """Every option a Captum class or object takes through wrapgrad: constructor options
        (a class only) and ``attribute`` defaults; and whether ``attribute`` takes ``**kwargs``."""
        from captum.attr import Attribution

        klass = type(method) if isinstance(method, Attribution) else method
        init = set() if isinstance(method, Attribution) else cls.init_parameters(klass)
        attribute, open_ = cls.attribute_parameters_of(klass)
        return frozenset(init | attribute), open_

    def attribute_parameters(self) -> tuple[set[str], bool]:
        return self.attribute_parameters_of(self.cls)

    @property
    def takes_target(self) -> bool:
        return self.traits.takes_target

    # -- building -------------------------------------------------------------------------------
    def build(self, model: Any) -> Any:
        """The Captum object for ``model``."""
        if self.template is not None:
            return self._retarget(self.template, model)
        init_params = inspect.signature(self.cls.__init__).parameters
        first = next(n for n in init_params if n != "self")
        args: dict[str, Any] = {first: model}
        if self.needs_layer:
            args["layer"] = resolve_layer(model, self.layer)
        return self.cls(**args, **self.init_options)

    @staticmethod
    def _retarget(obj: Any, model: Any) -> Any:
        """``obj`` if it is bound to ``model`` already, else a shallow copy bound to ``model``."""
        if getattr(obj, "forward_func", None) is model:
            return obj
        new = copy.copy(obj)
        if hasattr(new, "forward_func"):
            new.forward_func = model
        if isinstance(getattr(new, "model", None), nn.Module):
            new.model = model
        inner = getattr(new, "attribution_method", None)
        if inner is not None:
            new.attribution_method = CaptumExplainer._retarget(inner, model)
        return new

    # -- calling ---------------------------------------------------------------------------------
    def __call__(
        self, model: Any, inputs: Tensor | tuple[Tensor, ...], target: Any = None, **kwargs: Any
    ) -> Any:
        obj = self.build(model)
        kw = {**self.attribute_defaults, **kwargs}
        if self.family == "neuron" and "neuron_selector" not in kw:
            raise WrapgradValueError(
                f"neuron_selector: {self.cls.__name__} explains one neuron of the layer; pass "
                f"neuron_selector= (an index tuple into the layer's output without the batch "
                f"axis, or a callable)"
            )
        if self.takes_target:
            obj, kw["target"] = _target_in_forward(obj, target)
        elif target is not None:
            raise WrapgradValueError(
                f"target: {self.cls.__name__} takes no target"
                + (" (pass neuron_selector= instead)" if self.family == "neuron" else "")
                + f"; got {target!r}"
            )
        if kw.pop("create_graph", False):
            from wrapgrad.differentiable import KERNELS

            raise WrapgradValueError(
                f"create_graph: {self.cls.__name__} computes its gradients without a graph, so "
                f"its maps cannot be differentiated; use wrap(..., create_graph=True) with a "
                f"method that has a differentiable kernel ({', '.join(KERNELS)})"
            )
        if self.traits.requires_grad_inputs:
            inputs = _requiring_grad(inputs)
        with warnings.catch_warnings():
            quiet_captum_notices()
            out = obj.attribute(inputs, **kw)
        # Captum's gradients are taken without create_graph, so no map is differentiable; but
        # layer and neuron maps (activations times gradients, LayerGradCam, LayerConductance,
        # LayerDeepLift, ...) still hang on the forward pass's graph to the parameters (and to
        # inputs that require gradients): holding it would keep every activation alive. The maps
        # are returned detached; differentiable maps come from wrapgrad.differentiable.
        out = _detached(out)
        if self.interpolate:
            out = self._interpolate(out, inputs)
        return out

    def _interpolate(self, out: Any, inputs: Tensor | tuple[Tensor, ...]) -> Any:
        from captum.attr import LayerAttribution

        ref = inputs[0] if isinstance(inputs, tuple) else inputs
        size = tuple(ref.shape[2:])
        mode = "bilinear" if self.interpolate is True else self.interpolate
        if mode == "bilinear" and len(size) == 1:
            mode = "linear"

        def one(t: Any) -> Any:
            if not isinstance(t, Tensor) or t.dim() != len(size) + 2:
                raise WrapgradValueError(
                    f"interpolate: the layer map has shape {tuple(getattr(t, 'shape', ()))}, "
                    f"which does not resize to the inputs' spatial size {size}"
                )
            return LayerAttribution.interpolate(t, size, interpolate_mode=mode)

        if isinstance(out, (tuple, list)):
            return type(out)(one(t) for t in out)
        return one(out)

    def __repr__(self) -> str:
        layer = f", layer={self.layer!r}" if self.layer is not None else ""
        return f"CaptumExplainer({self.cls.__name__}{layer})"


class FunctionExplainer:
    """A plain callable ``(model, inputs, target=None, **kwargs) -> attributions`` as an Explainer.

    Its traits are the callable's own ``traits`` (an :class:`~wrapgrad.records.ExplainerTraits`),
    else ``traits=``, else the conservative defaults (looped, never vmapped).
    """

    def __init__(self, fn: Callable[..., Any], *, traits: ExplainerTraits | None = None) -> None:
        if not callable(fn):
            raise WrapgradTypeError(f"method: expected a callable, got {type(fn).__name__}")
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            sig = None
        if sig is not None:
            positional = [
                p
                for p in sig.parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            has_var = any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values())
            if len(positional) < 2 and not has_var:
                raise WrapgradTypeError(
                    f"method: a callable explainer takes (model, inputs, target=None, **kwargs); "
                    f"{getattr(fn, '__name__', fn)!r} takes {len(positional)} positional argument(s)"
                )
        self.fn = fn
        if traits is not None and not isinstance(traits, ExplainerTraits):
            raise WrapgradTypeError(
                f"traits: expected an ExplainerTraits record, got {type(traits).__name__}"
            )
        self.traits: ExplainerTraits = traits or traits_of(fn)
        self.family = self.traits.family
        self.name = self.traits.name

    def __call__(self, model: Any, inputs: Any, target: Any = None, **kwargs: Any) -> Any:
        return self.fn(model, inputs, target, **kwargs)

    def __repr__(self) -> str:
        return f"FunctionExplainer({self.name})"


class BoundExplainer:
    """An explainer with default keyword arguments for every call (call-time keywords win);
    it keeps the explainer's traits."""

    def __init__(self, explainer: Any, defaults: dict[str, Any]) -> None:
        self.explainer = explainer
        self.defaults = dict(defaults)
        self.traits: ExplainerTraits = traits_of(explainer)
        self.family = self.traits.family
        self.name = self.traits.name

    def __call__(self, model: Any, inputs: Any, target: Any = None, **kwargs: Any) -> Any:
        return self.explainer(model, inputs, target, **{**self.defaults, **kwargs})

    def __repr__(self) -> str:
        return f"BoundExplainer({self.explainer!r}, {sorted(self.defaults)})"
