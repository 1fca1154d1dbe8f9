"""The plugin hooks of wrapgrad: the whole contract between the core and a plugin.

A plugin is a module (or object) whose functions are marked with :data:`wrapgrad.hookimpl` and
named after the hooks below. Each hook takes no argument and returns (or yields) *spec* records
from :mod:`wrapgrad.records`; the registry collects them, refuses a name claimed twice (naming
both plugins), and builds components on demand. A package makes itself known through the entry
point group ``wrapgrad``, exactly as wrapgrad's own built-in plugins do::

    # pyproject.toml of a third-party package
    [project.entry-points.wrapgrad]
    my_plugin = "my_package.wrapgrad_plugin"

    # my_package/wrapgrad_plugin.py
    from wrapgrad import hookimpl
    from wrapgrad.records import EnhancerSpec

    @hookimpl
    def wrapgrad_enhancers():
        yield EnhancerSpec(name="my_grad", factory=MyGrad, summary="My enhancer.")

Entry points load lazily, the first time a component is looked up, never at ``import wrapgrad``.
``WRAPGRAD_DISABLE_PLUGIN_AUTOLOAD=1`` loads only the built-ins (the entry points of the wrapgrad
distribution itself).

**Versions.** The hooks below and the spec records they yield are version :data:`HOOK_API`
(major, minor). A plugin module says which version it was written for with a module attribute::

    WRAPGRAD_HOOK_API = "1.0"

A new minor version only adds (hooks, optional spec fields) or changes a call in a way older
plugins keep working with, so any ``1.x`` plugin loads on any ``1.y`` wrapgrad (a hook newer than
this wrapgrad is reported as unknown, as a misspelt one is); one that uses what a newer minor
version added needs that wrapgrad.
A different major version (hooks removed or changed) makes the plugin *broken*: it is not
registered, and ``wrapgrad plugins`` shows a broken row naming it and both versions. A plugin
that declares no version is accepted as written for the current major version.

>>> HOOK_API
(1, 2)
>>> hook_api_problem(type("Plugin", (), {"WRAPGRAD_HOOK_API": "2.1"}))
'written for wrapgrad hook API 2.1, but this wrapgrad provides 1.2 (a different major version); install a release of the plugin for hook API 1.x'
>>> hook_api_problem(type("Plugin", (), {})) is None
True
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import pluggy

from wrapgrad.records import (
    AttackSpec,
    CalibratorSpec,
    CommandSpec,
    DatasetSpec,
    EnhancerSpec,
    ExplainerSpec,
    MetricSpec,
    ModelSpec,
    ObjectiveSpec,
    PerturberSpec,
    PipelineStepSpec,
)

PROJECT_NAME = "wrapgrad"

#: The version of the hook API below: ``(major, minor)``. The minor number grows when hooks or
#: optional spec fields are added, or a call changes in a way older plugins keep working with
#: (1.2: a command's factory is handed its parser); the major number when a hook or a spec
#: field is removed or changes meaning.
HOOK_API: tuple[int, int] = (1, 2)

#: The module attribute a plugin declares its hook API version in (``"1.0"``).
HOOK_API_ATTRIBUTE = "WRAPGRAD_HOOK_API"

_VERSION_RE = re.compile(r"^\s*(\d+)(?:\.(\d+))?\s*$")


def parse_hook_api(value: Any) -> tuple[int, int]:
    """A declared hook API version as ``(major, minor)``: ``"1.0"``, ``"1"``, ``(1, 0)`` or
    ``1``. Raises ``ValueError`` naming what came otherwise."""
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return value[0], value[1]
    if isinstance(value, int) and not isinstance(value, bool):
        return value, 0
    match = _VERSION_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{HOOK_API_ATTRIBUTE}: expected a version such as '1.0', got {value!r}")
    return int(match.group(1)), int(match.group(2) or 0)


def hook_api_problem(plugin: Any) -> str | None:
    """Why ``plugin`` cannot be loaded by this wrapgrad's hook API, or None (also when it
    declares no version)."""
    if not hasattr(plugin, HOOK_API_ATTRIBUTE):
        return None
    declared = getattr(plugin, HOOK_API_ATTRIBUTE)
    try:
        major, minor = parse_hook_api(declared)
    except ValueError as exc:
        return str(exc)
    if major != HOOK_API[0]:
        return (
            f"written for wrapgrad hook API {major}.{minor}, but this wrapgrad provides "
            f"{HOOK_API[0]}.{HOOK_API[1]} (a different major version); install a release of "
            f"the plugin for hook API {HOOK_API[0]}.x"
        )
    return None


hookspec = pluggy.HookspecMarker(PROJECT_NAME)


@hookspec
def wrapgrad_explainers() -> Iterable[ExplainerSpec]:
    """Attribution methods, looked up by ``wrap(model, method=name)``.

    ``factory(**init_options)`` returns an :class:`~wrapgrad.protocols.Explainer`: a callable
    ``(model, inputs, target=None, **kwargs) -> attributions``.

    Example::

        @hookimpl
        def wrapgrad_explainers():
            yield ExplainerSpec(name="grad_times_two", factory=lambda: my_explainer)

    .. versionadded:: 0.1
    """


@hookspec
def wrapgrad_perturbers() -> Iterable[PerturberSpec]:
    """Noise sources for enhancers and calibration: input noise, weight noise, or noise on a
    hidden state shaped by a guide attribution (neural SDEs).

    Example::

        @hookimpl
        def wrapgrad_perturbers():
            yield PerturberSpec(name="uniform_input", factory=UniformInput, target="input")

    .. versionadded:: 0.1
    """


@hookspec
def wrapgrad_enhancers() -> Iterable[EnhancerSpec]:
    """Explanation enhancers (SmoothGrad, NoiseGrad, ...), looked up by
    ``wrap(model, method, enhancer=name, **options)``; ``factory(**options)`` returns an
    :class:`~wrapgrad.protocols.Enhancer`. Options the factory's signature does not name are
    refused with the closest known option.

    Example::

        @hookimpl
        def wrapgrad_enhancers():
            yield EnhancerSpec(name="my_grad", factory=MyGrad, summary="My enhancer.")

    .. versionadded:: 0.1
    """


@hookspec
def wrapgrad_calibrators() -> Iterable[CalibratorSpec]:
    """Noise-level calibrators (accuracy-drop rule, FusionGrad heuristics), used by
    ``wrapgrad.calibrate`` and by ``sigma="auto"``.

    Example::

        @hookimpl
        def wrapgrad_calibrators():
            yield CalibratorSpec(name="accuracy_drop", factory=AccuracyDrop)

    .. versionadded:: 0.1
    """


@hookspec
def wrapgrad_metrics() -> Iterable[MetricSpec]:
    """Metrics, built by ``wrapgrad.metric(name, **params)``.

    Example::

        @hookimpl
        def wrapgrad_metrics():
            yield MetricSpec(name="l1_distance", factory=L1Distance, requires="maps",
                             higher_is_better=False)

    .. versionadded:: 0.1
    """


@hookspec
def wrapgrad_attacks() -> Iterable[AttackSpec]:
    """Attribution attacks (IFIA, ...), built by ``wrapgrad.attack(name, **params)``.

    Example::

        @hookimpl
        def wrapgrad_attacks():
            yield AttackSpec(name="random_noise", factory=RandomNoiseAttack)

    .. versionadded:: 0.1
    """


@hookspec
def wrapgrad_objectives() -> Iterable[ObjectiveSpec]:
    """Training objectives for robust attributions (PGD-AT, IG-NORM, AAT, ...).

    Example::

        @hookimpl
        def wrapgrad_objectives():
            yield ObjectiveSpec(name="natural", factory=CrossEntropyObjective)

    .. versionadded:: 0.1
    """


@hookspec
def wrapgrad_datasets() -> Iterable[DatasetSpec]:
    """Embedded data sets (nothing is downloaded at run time). ``factory(split=..., seed=...,
    **options)`` returns a :class:`~wrapgrad.protocols.LabelledDataset`, e.g. a
    :class:`wrapgrad.datasets.InMemoryDataset`.

    Example::

        @hookimpl
        def wrapgrad_datasets():
            yield DatasetSpec(name="digits8x8", factory=load_digits8x8, num_classes=10)

    .. versionadded:: 0.1
    """


@hookspec
def wrapgrad_models() -> Iterable[ModelSpec]:
    """Reference model architectures (and their training recipes).

    Example::

        @hookimpl
        def wrapgrad_models():
            yield ModelSpec(name="small_cnn", factory=SmallCNN)

    .. versionadded:: 0.1
    """


@hookspec
def wrapgrad_pipeline_steps() -> Iterable[PipelineStepSpec]:
    """Stages of a pipeline run (``wrapgrad run FILE``); the built-in ones (data, model,
    calibration, explain, evaluate, report) come from the pipeline plugin's own hook.

    A step reads its table of the pipeline file into ``schema`` and runs after the steps that
    provide what it ``needs``; ``factory()`` returns an object with ``check``, ``shrink``,
    ``outputs`` and ``run`` (see :class:`~wrapgrad.records.PipelineStepSpec` and
    ``docs/pipelines.md``).

    Example::

        @hookimpl
        def wrapgrad_pipeline_steps():
            yield PipelineStepSpec(name="train", factory=TrainStep, table="train",
                                   schema=TrainTable, needs=("data",), provides=("models",))

    .. versionadded:: 0.1
    """


@hookspec
def wrapgrad_commands() -> Iterable[CommandSpec]:
    """Subcommands of the ``wrapgrad`` command line (``plugins`` is one of them).

    The command line adds the ``argparse`` sub-parser ``wrapgrad <name>`` (help: the spec's
    ``summary``; ``--help`` text: its ``description``); ``factory(parser)`` adds the command's
    arguments to it and returns the action ``(args: argparse.Namespace) -> int``. (Before hook
    API 1.2 the factory was handed the sub-parsers object and added its parser itself; such a
    factory still works, deprecated: :class:`wrapgrad.cli.CommandParser`.)

    Example::

        def add_hello_command(parser):
            parser.add_argument("--name", default="world")
            return lambda args: print(f"hello {args.name}") or 0

        @hookimpl
        def wrapgrad_commands():
            yield CommandSpec(name="hello", factory=add_hello_command, summary="Say hello.")

    .. versionadded:: 0.1
    """
