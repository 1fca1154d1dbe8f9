"""Small frozen records that plugin hooks yield and the registry hands out.

A plugin contributes components by yielding *specs* from its hooks (see :mod:`wrapgrad.hookspecs`).
Every spec has a ``name`` (normalised to lower snake case and validated), a ``factory`` (called with
the user's options to build the component) and a one-line ``summary``. Variants are made with
:func:`attrs.evolve`, which re-validates.

In a plugin (``MyGrad`` being the plugin's class)::

    from wrapgrad import hookimpl
    from wrapgrad.records import EnhancerSpec

    @hookimpl
    def wrapgrad_enhancers():
        yield EnhancerSpec(name="my_grad", factory=MyGrad, summary="My enhancer.")

A spec normalises and validates its name, and reads its options from the factory:

>>> def my_grad(n_samples=10, *, seed=None): ...
>>> spec = EnhancerSpec(name="My-Grad", factory=my_grad, summary="My enhancer.")
>>> spec.name, sorted(spec.option_names()[0])
('my_grad', ['n_samples', 'seed'])
>>> EnhancerSpec(name="2grad", factory=my_grad)
Traceback (most recent call last):
...
ValueError: name: expected lower snake case starting with a letter (letters, digits, '_' and '+'), got '2grad'
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, TypeVar

import attrs

__all__ = [
    "KINDS",
    "METRIC_FORMS",
    "VMAP_LAYOUTS",
    "AttackSpec",
    "CalibratorSpec",
    "CommandSpec",
    "DatasetSpec",
    "EnhancerSpec",
    "ExplainerSpec",
    "ExplainerTraits",
    "MetricSpec",
    "ModelSpec",
    "ObjectiveSpec",
    "PerturberSpec",
    "PipelineStepSpec",
    "PluginInfo",
    "Spec",
    "normalize_name",
    "traits_of",
]

_S = TypeVar("_S", bound="Spec")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_+]*$")


def normalize_name(value: object) -> str:
    """Lower-case a component name and turn ``-``/spaces into ``_`` (``"Noise-Grad"`` -> ``"noise_grad"``)."""
    if not isinstance(value, str):
        raise TypeError(f"name: expected a string, got {type(value).__name__}")
    return value.strip().lower().replace("-", "_").replace(" ", "_")


def _matching(pattern: re.Pattern[str], expected: str) -> Callable[..., None]:
    """An attrs validator: the value matches ``pattern``, else a ValueError naming the field,
    ``expected`` and the value."""

    def check(instance: object, attribute: attrs.Attribute, value: str) -> None:
        if not pattern.match(value):
            raise ValueError(f"{attribute.name}: expected {expected}, got {value!r}")

    return check


_check_name = _matching(
    _NAME_RE, "lower snake case starting with a letter (letters, digits, '_' and '+')"
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
    options: tuple[str, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(tuple)
    )
    """The option names ``factory`` takes. None (the default): read once from the factory's
    signature by :func:`wrapgrad.options.accepted` (its keyword parameters; a factory with
    ``**kwargs`` takes any option). Declare them where the signature does not tell."""

    smoke: tuple[tuple[str, Any], ...] = attrs.field(
        default=(), converter=lambda m: tuple(sorted(dict(m).items()))
    )
    """What a ``--smoke`` run (CI) does to this component's options: option name -> the largest
    value it keeps (e.g. ``{"restarts": 1, "steps": 2}``). Declared by the component, so a
    pipeline runner needs to know no plugin's option names. Given as a dict."""

    unavailable: str = attrs.field(default="", converter=str)
    """Non-empty: why this component is not offered (the plugin knows the name, but the
    component cannot keep its kind's contract here). The registry leaves it out of every
    listing and answers a lookup of the name with an
    :class:`~wrapgrad.errors.UnavailableError` carrying this reason, so a user who asks for it
    learns why and what to use instead. Its factory is never called."""

    @classmethod
    def from_rows(
        cls: type[_S], columns: str, rows: Iterable[Sequence[Any]], **same: Any
    ) -> list[_S]:
        """One spec per row of a hook's table: ``columns`` names, space-separated, the fields
        each row gives in order; ``same`` are the fields every row shares.

        Example::

            @hookimpl
            def wrapgrad_calibrators():
                return CalibratorSpec.from_rows(
                    "name factory summary",
                    [("halve", Halve, "Both levels halved."), ("drop", Drop, "AD = target.")],
                    smoke={"draws": 2},
                )

        .. versionadded:: 0.1
        """
        names = columns.split()
        return [cls(**dict(zip(names, row, strict=True)), **same) for row in rows]

    def smoke_caps(self) -> dict[str, Any]:
        """:attr:`smoke` as a dict."""
        return dict(self.smoke)

    def option_names(self) -> tuple[frozenset[str], bool]:
        """``(names, open)``: the options the factory takes, and whether it takes any other
        (``**kwargs``). The one place option names come from (:mod:`wrapgrad.options`)."""
        if self.options is not None:
            return frozenset(self.options), False
        from wrapgrad.options import accepted

        return accepted(self.factory)


#: How an explainer lays out a batch it expands internally: ``"block"`` =
#: ``torch.cat([batch] * s)`` (Integrated Gradients' steps), ``"interleave"`` =
#: ``repeat_interleave(s)`` (NoiseTunnel inside GradientShap).
VMAP_LAYOUTS = ("block", "interleave")
FAMILIES = ("attribution", "layer", "neuron")
#: The call forms of metrics (:attr:`MetricSpec.requires`).
METRIC_FORMS = ("maps", "model", "mask", "mosaic")


@attrs.frozen(kw_only=True)
class ExplainerTraits:
    """What an explainer can do: the one record the engine, ``wrap()`` and the checks read.

    Carried by :class:`ExplainerSpec` (``spec.traits``) and by every explainer ``wrap()`` builds
    (``explainer.traits``); :func:`traits_of` reads it from any explainer. An explainer without
    one gets the conservative defaults below (run in a loop, never under ``vmap``), so a plugin
    that follows the :class:`~wrapgrad.protocols.Explainer` protocol and nothing more works.

    >>> traits = ExplainerTraits(name="my_grad", requires_grad_inputs=True, vmap_layout="block")
    >>> traits.evolve(vmap_layout=None).vmap_layout is None
    True
    >>> traits_of(lambda model, inputs, target=None: inputs).vmap_layout is None  # the defaults
    True
    """

    name: str = "explainer"
    """A readable name for messages and reports."""
    family: str = attrs.field(default="attribution", validator=attrs.validators.in_(FAMILIES))
    """``"attribution"`` (to the inputs), ``"layer"`` (to a layer's input or output, needs
    ``layer=``) or ``"neuron"`` (a neuron's value to the inputs, needs ``layer=`` and takes
    ``neuron_selector``)."""
    takes_target: bool = attrs.field(
        default=attrs.Factory(lambda self: self.family != "neuron", takes_self=True)
    )
    """Explains the output ``target`` selects, so a call takes a ``target``. Defaults to the
    family's convention: attribution and layer methods take one, neuron methods (which take
    ``neuron_selector``) do not. False for a method that explains no output and refuses a
    target (Captum's LayerActivation); True for a neuron method that needs both (Captum's
    NeuronConductance: the gradient of the target output through the neuron)."""
    baseline_distribution: bool = False
    """Its ``baselines`` are a distribution of reference inputs, rows not paired with the
    inputs' rows, and it needs more than one (Captum's DeepLiftShap averages DeepLift over every
    row; GradientShap draws rows at random). False: one baseline per sample (or one for all)."""
    uses_hooks: bool = False
    """Relies on module hooks (DeepLift, GuidedBackprop, LRP, layer methods): never vmapped."""
    stochastic: bool = False
    """Draws random numbers itself (Lime, KernelShap, GradientShap, ...), from the global RNGs
    (torch's, NumPy's, Python's); the engine runs each Monte-Carlo sample in a call of its own,
    seeds those RNGs from the sample's own seed before it and restores them afterwards, so the
    draws do not depend on chunking or strategy (see :mod:`wrapgrad.engine.rng`). False:
    deterministic, the same maps for the same arguments (what the checks hold it to)."""
    requires_grad_inputs: bool = False
    """Differentiates with respect to the inputs: inputs must be floating point, and the engine
    hands it inputs that require gradients."""
    vmap_layout: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.in_(VMAP_LAYOUTS))
    )
    """How it lays out a batch it expands (``"block"`` or ``"interleave"``, see
    :data:`VMAP_LAYOUTS`) when it may run on ``k`` stacked weight samples under ``vmap``; None:
    it may not (hooks, per-example loops, unknown code)."""
    differentiable: bool = False
    """Its maps keep a graph to the inputs and parameters when called with
    ``create_graph=True`` (Saliency, InputXGradient, Integrated Gradients)."""

    def evolve(self, **changes: Any) -> ExplainerTraits:
        """A copy with ``changes`` (re-validated)."""
        return attrs.evolve(self, **changes)


def traits_of(explainer: Any) -> ExplainerTraits:
    """The :class:`ExplainerTraits` of any explainer: its ``traits`` attribute, else the
    conservative defaults named after it."""
    traits = getattr(explainer, "traits", None)
    if isinstance(traits, ExplainerTraits):
        return traits
    name = getattr(explainer, "name", None) or getattr(
        explainer, "__name__", type(explainer).__name__
    )
    return ExplainerTraits(name=str(name))


@attrs.frozen(kw_only=True)
class ExplainerSpec(Spec):
    """An attribution method. ``factory(**init_options)`` returns an
    :class:`~wrapgrad.protocols.Explainer`; ``traits`` says what it can do (see
    :class:`ExplainerTraits`; its ``name`` defaults to the spec's)."""

    kind: ClassVar[str] = "explainer"
    traits: ExplainerTraits = attrs.field(
        default=attrs.Factory(lambda self: ExplainerTraits(name=self.name), takes_self=True),
        validator=attrs.validators.instance_of(ExplainerTraits),
    )

    def __getattr__(self, name: str) -> Any:
        # ``spec.family`` / ``uses_hooks`` / ``stochastic``: fields before the traits record
        # held them, then shortcuts to it; deprecated since 0.1 (one way to read them: traits).
        if name in ("family", "uses_hooks", "stochastic"):
            warnings.warn(
                f"ExplainerSpec.{name} is deprecated and will be removed; use spec.traits.{name}",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(self.traits, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


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
    """An explanation enhancer; ``factory(**options)`` returns an :class:`~wrapgrad.protocols.Enhancer`.

    Noise levels that users may set to ``"auto"`` (chosen by calibration, see
    :func:`wrapgrad.wrap`) are declared in ``levels``; ``calibrator`` names the calibrator that
    chooses them together.

    >>> def fusion(sigma=0.1, noise_level=0.1): ...
    >>> spec = EnhancerSpec(name="fusiongrad", factory=fusion, calibrator="halve",
    ...                     levels={"sigma": "weight", "noise_level": "input"})
    >>> spec.level_targets()
    {'noise_level': 'input', 'sigma': 'weight'}
    """

    kind: ClassVar[str] = "enhancer"
    levels: tuple[tuple[str, str], ...] = attrs.field(
        default=(), converter=lambda m: tuple(sorted(dict(m).items()))
    )
    """Option name -> the perturber target it sets (``"weight"`` or ``"input"``): the options
    ``wrap(..., option="auto", calibration=data)`` calibrates. Given as a dict."""
    calibrator: str | None = None
    """The registered calibrator for this enhancer's ``"auto"`` levels (None: wrapgrad's
    default, ``"accuracy_drop"``). It is called with ``perturber=`` the target when one level is
    auto; when several are, it must return them all (``.sigma`` for the weight level,
    ``.noise_level`` for the input level)."""

    def level_targets(self) -> dict[str, str]:
        """:attr:`levels` as a dict."""
        return dict(self.levels)


@attrs.frozen(kw_only=True)
class MetricSpec(Spec):
    """A metric; ``factory(**params)`` returns a :class:`~wrapgrad.protocols.Metric`."""

    kind: ClassVar[str] = "metric"
    higher_is_better: bool | None = None
    requires: str = attrs.field(default="maps", validator=attrs.validators.in_(METRIC_FORMS))
    """The call form (:data:`METRIC_FORMS`): ``"maps"``: ``metric(a, b)``; ``"model"``:
    ``metric(model, inputs, target, explain)``; ``"mask"``: ``metric(attributions, mask)``;
    ``"mosaic"``: ``metric(model, mosaics, target, explain, positions)``, where each input is a
    2x2 mosaic of images and ``positions`` ``(B, 4)`` flags the tiles (top left, top right,
    bottom left, bottom right) that show the target class (Quantus' Focus)."""


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
    ``(model, data, **options) -> record`` with at least ``.drop`` and ``.sigma`` (weight noise)
    or ``.noise_level`` (input noise)."""

    kind: ClassVar[str] = "calibrator"


@attrs.frozen(kw_only=True)
class DatasetSpec(Spec):
    """An embedded data set; ``factory(split=..., seed=..., **options)`` returns a
    :class:`~wrapgrad.protocols.LabelledDataset` (e.g. a
    :class:`wrapgrad.datasets.InMemoryDataset`)."""

    kind: ClassVar[str] = "dataset"
    num_classes: int | None = None
    input_shape: tuple[int, ...] | None = None
    has_masks: bool = False
    masks: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """Names of the ground-truth masks the data set carries (e.g. ``("digit", "square")``), so
    pipeline files can be checked before any data is built."""


@attrs.frozen(kw_only=True)
class ModelSpec(Spec):
    """A reference model; ``factory(**options)`` returns an untrained ``torch.nn.Module``.

    A model with training recipes also offers ``recipe`` and ``pretrained`` (reached through
    :func:`wrapgrad.pretrained`, so no plugin imports another)."""

    kind: ClassVar[str] = "model"
    recipe: Callable[..., Any] | None = None
    """``recipe(dataset, **overrides)`` -> the validated training recipe for a data set (raises a
    :class:`~wrapgrad.errors.WrapgradValueError` naming a bad override); None: no recipes."""
    pretrained: Callable[..., Any] | None = None
    """``pretrained(dataset, *, seed=0, progress=False, **overrides)`` -> the model trained with
    its recipe (cached), in eval mode; None: no recipes."""


_TABLE_RE = re.compile(r"^([a-z][a-z0-9_]*)?$")


_check_table = _matching(_TABLE_RE, "a table name in lower snake case (or '' for none)")


def _check_schema(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if value is not None and not (isinstance(value, type) and attrs.has(value)):
        raise TypeError(f"{attribute.name}: expected an attrs record class or None, got {value!r}")


@attrs.frozen(kw_only=True)
class PipelineStepSpec(Spec):
    """A stage of a pipeline run (``wrapgrad run FILE``): it reads one table of the pipeline file
    and does its work on the run's context.

    ``factory()`` returns the step, an object with four methods (``plan`` and ``context`` are the
    pipeline plugin's ``Plan`` and ``RunContext``, see ``docs/pipelines.md``):

    * ``check(table, plan) -> table``: cross-checks when the file is read (names, references to
      other tables; nothing heavy), returning the table with defaults that depend on other tables
      filled in; raise ``plan.fail(field, message)``;
    * ``shrink(table) -> table``: the ``--smoke`` version of the table;
    * ``outputs(table) -> tuple[str, ...]``: the files it writes, relative to the output directory
      (checked before anything runs);
    * ``run(table, context) -> None``: the work; it reads the ``needs`` entries of the context and
      adds the ``provides`` entries.

    Steps run in the order their ``needs`` and ``provides`` give; a step runs when the file has its
    table (or ``always``).

    Example::

        PipelineStepSpec(name="train", factory=TrainStep, table="train", schema=TrainTable,
                         needs=("data",), provides=("models",))
    """

    kind: ClassVar[str] = "pipeline_step"
    table: str = attrs.field(default="", validator=_check_table)
    """The table of the pipeline file it reads (``"train"`` reads ``[train]``); ``""``: none."""
    schema: type | None = attrs.field(default=None, validator=_check_schema)
    """The frozen attrs record the table is read into: field types from the annotations, a
    docstring per field in ``metadata["doc"]`` (the file reference is generated from them),
    values checked by the fields' validators. None: the step reads no table."""
    named: bool = False
    """The table holds any number of named tables ``[table.<name>]``, each read into ``schema``
    (the step gets a dict name -> record)."""
    always: bool = False
    """Run also when the file has no table for it (with the schema's defaults)."""
    needs: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """Run-context entries it reads (``"data"``, ``"models"``, ``"levels"``, ``"explanations"``,
    ``"scores"``, or a plugin's own): it runs after every step that provides them."""
    provides: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """Run-context entries it adds."""


@attrs.frozen(kw_only=True)
class CommandSpec(Spec):
    """A ``wrapgrad`` CLI subcommand. The command line adds its sub-parser, named ``name``, with
    ``summary`` as its line in ``wrapgrad --help`` and ``description`` at the top of ``wrapgrad
    <name> --help``; ``factory(parser)`` adds the command's arguments to that parser and
    returns the action ``(args) -> int`` (as pytest's ``pytest_addoption`` and tox's
    ``tox_add_option`` are handed their parser).

    A factory written for hook API 1.0-1.1 was handed the sub-parsers object and added its parser
    itself: its ``add_parser(name, ...)`` call on the parser it is handed now still adds that
    sub-parser as it asks (deprecated, see :class:`wrapgrad.cli.CommandParser`)."""

    kind: ClassVar[str] = "command"
    description: str | None = None
    """The text above the arguments in ``wrapgrad <name> --help`` (default: the summary). Hook
    API 1.2."""


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
