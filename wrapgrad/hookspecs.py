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
"""

from __future__ import annotations

from collections.abc import Iterable

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
    """Embedded data sets (nothing is downloaded at run time).

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

    ``factory(subparsers)`` adds an ``argparse`` sub-parser and returns the action
    ``(args: argparse.Namespace) -> int``.

    Example::

        @hookimpl
        def wrapgrad_commands():
            yield CommandSpec(name="hello", factory=add_hello_command, summary="Say hello.")

    .. versionadded:: 0.1
    """
