"""Small frozen records that plugin hooks yield and the registry hands out.

A plugin contributes components by yielding *specs* from its hooks (see :mod:`wrapgrad.hookspecs`).
Every spec has a ``name`` (normalised to lower snake case and validated), a ``factory`` (called with
the user's options to build the component) and a one-line ``summary``. Variants are made with
:func:`attrs.evolve`, which re-validates.

Example::

    from wrapgrad import hookimpl
    from wrapgrad.records import EnhancerSpec

    @hookimpl
    def wrapgrad_enhancers():
        yield EnhancerSpec(name="my_grad", factory=MyGrad, summary="My enhancer.")
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar

import attrs

__all__ = [
    "KINDS",
    "AttackSpec",
    "CalibratorSpec",
    "CommandSpec",
    "DatasetSpec",
    "EnhancerSpec",
    "ExplainerSpec",
    "MetricSpec",
    "ModelSpec",
    "ObjectiveSpec",
    "PerturberSpec",
    "PipelineStepSpec",
    "PluginInfo",
    "Spec",
    "normalize_name",
]

_NAME_RE = re.compile(r"^[a-z][a-z0-9_+]*$")


def normalize_name(value: object) -> str:
    """Lower-case a component name and turn ``-``/spaces into ``_`` (``"Noise-Grad"`` -> ``"noise_grad"``)."""
    if not isinstance(value, str):
        raise TypeError(f"name: expected a string, got {type(value).__name__}")
    return value.strip().lower().replace("-", "_").replace(" ", "_")


def _check_name(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if not _NAME_RE.match(value):
        raise ValueError(
            f"{attribute.name}: expected lower snake case starting with a letter "
            f"(letters, digits, '_' and '+'), got {value!r}"
        )


def _check_callable(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if not callable(value):
        raise TypeError(f"{attribute.name}: expected a callable, got {type(value).__name__}")


@attrs.frozen(kw_only=True)
class Spec:
    """What every contributed component has in common."""

    kind: ClassVar[str] = "component"

    name: str = attrs.field(converter=normalize_name, validator=_check_name)
    """The name users refer to the component by (lower snake case)."""
    factory: Callable[..., Any] = attrs.field(validator=_check_callable)
    """Called with the user's options to build the component."""
    summary: str = attrs.field(default="", converter=str)
    """One line for listings (``wrapgrad plugins``)."""


@attrs.frozen(kw_only=True)
class ExplainerSpec(Spec):
    """An attribution method. ``factory(**init_options)`` returns an :class:`~wrapgrad.protocols.Explainer`.

    ``family`` says what the method attributes: ``"attribution"`` (to the inputs), ``"layer"`` (to a
    layer's input or output, needs ``layer=``) or ``"neuron"`` (a neuron's value to the inputs,
    needs ``layer=`` and takes ``neuron_selector`` instead of ``target``).
    """

    kind: ClassVar[str] = "explainer"
    family: str = attrs.field(
        default="attribution", validator=attrs.validators.in_(("attribution", "layer", "neuron"))
    )
    uses_hooks: bool = False
    """True where the method relies on module hooks (DeepLift, GuidedBackprop, LRP, layer methods):
    such methods cannot run under ``vmap``."""
    stochastic: bool = False
    """True where the method draws random numbers itself (Lime, KernelShap, ...)."""


@attrs.frozen(kw_only=True)
class PerturberSpec(Spec):
    """A noise source; ``factory(**options)`` returns a :class:`~wrapgrad.protocols.Perturber`."""

    kind: ClassVar[str] = "perturber"
    target: str = attrs.field(
        default="input", validator=attrs.validators.in_(("input", "weight", "state"))
    )
    """What it perturbs: the inputs, the weights, or a hidden state (neural SDEs)."""


@attrs.frozen(kw_only=True)
class EnhancerSpec(Spec):
    """An explanation enhancer; ``factory(**options)`` returns an :class:`~wrapgrad.protocols.Enhancer`."""

    kind: ClassVar[str] = "enhancer"


@attrs.frozen(kw_only=True)
class MetricSpec(Spec):
    """A metric; ``factory(**params)`` returns a :class:`~wrapgrad.protocols.Metric`."""

    kind: ClassVar[str] = "metric"
    higher_is_better: bool | None = None
    requires: str = attrs.field(
        default="maps", validator=attrs.validators.in_(("maps", "model", "mask"))
    )
    """``"maps"``: ``metric(a, b)``; ``"model"``: ``metric(model, inputs, target, explain)``;
    ``"mask"``: ``metric(attributions, mask)``."""


@attrs.frozen(kw_only=True)
class AttackSpec(Spec):
    """An attribution attack; ``factory(**params)`` returns an :class:`~wrapgrad.protocols.Attack`."""

    kind: ClassVar[str] = "attack"


@attrs.frozen(kw_only=True)
class ObjectiveSpec(Spec):
    """A training objective; ``factory(**params)`` returns an :class:`~wrapgrad.protocols.Objective`."""

    kind: ClassVar[str] = "objective"


@attrs.frozen(kw_only=True)
class CalibratorSpec(Spec):
    """A noise-level calibrator; ``factory(**params)`` returns a callable
    ``(model, data, **options) -> record`` with at least ``.sigma`` and ``.drop``."""

    kind: ClassVar[str] = "calibrator"


@attrs.frozen(kw_only=True)
class DatasetSpec(Spec):
    """An embedded data set; ``factory(split=..., seed=..., **options)`` returns a torch Dataset."""

    kind: ClassVar[str] = "dataset"
    num_classes: int | None = None
    input_shape: tuple[int, ...] | None = None
    has_masks: bool = False
    masks: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """Names of the ground-truth masks the data set carries (e.g. ``("digit", "square")``), so
    pipeline files can be checked before any data is built."""


@attrs.frozen(kw_only=True)
class ModelSpec(Spec):
    """A reference model; ``factory(**options)`` returns an untrained ``torch.nn.Module``."""

    kind: ClassVar[str] = "model"


@attrs.frozen(kw_only=True)
class PipelineStepSpec(Spec):
    """A pipeline step a pipeline file may reference by name."""

    kind: ClassVar[str] = "pipeline_step"


@attrs.frozen(kw_only=True)
class CommandSpec(Spec):
    """A ``wrapgrad`` CLI subcommand. ``factory(subparsers)`` adds its parser and returns the
    action ``(args) -> int``."""

    kind: ClassVar[str] = "command"


#: Every kind of component, mapped to its spec class and the hook that yields it.
KINDS: dict[str, tuple[type[Spec], str]] = {
    cls.kind: (cls, hook)
    for cls, hook in [
        (ExplainerSpec, "wrapgrad_explainers"),
        (PerturberSpec, "wrapgrad_perturbers"),
        (EnhancerSpec, "wrapgrad_enhancers"),
        (CalibratorSpec, "wrapgrad_calibrators"),
        (MetricSpec, "wrapgrad_metrics"),
        (AttackSpec, "wrapgrad_attacks"),
        (ObjectiveSpec, "wrapgrad_objectives"),
        (DatasetSpec, "wrapgrad_datasets"),
        (ModelSpec, "wrapgrad_models"),
        (PipelineStepSpec, "wrapgrad_pipeline_steps"),
        (CommandSpec, "wrapgrad_commands"),
    ]
}


@attrs.frozen(kw_only=True)
class PluginInfo:
    """One row of :func:`wrapgrad.plugins`: a component and who provides it, or a broken plugin."""

    name: str
    """The component's name (for a broken plugin: the entry point's name)."""
    kind: str
    """The component's kind (``"enhancer"``, ``"metric"``, ...), or ``"broken"``."""
    plugin: str
    """The plugin (entry point) that provides it."""
    distribution: str | None = None
    """The installed distribution the plugin comes from (None if registered in code)."""
    version: str | None = None
    summary: str = ""
    error: str | None = None
    """For a broken plugin: what went wrong."""

    @property
    def broken(self) -> bool:
        return self.error is not None
