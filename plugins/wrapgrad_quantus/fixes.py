"""Quantus metric classes as the bridge runs them: subclasses that repair what fails here.

:func:`fixed` maps a Quantus metric class to the class the bridge constructs. Each repair is a
small subclass that reuses Quantus' own code wherever that code is right (none of it is copied,
and no module, NumPy's or Quantus', is changed):

* **NumPy 2** (IROF; PixelFlipping's ``return_auc_per_sample``; the ``get_auc_score`` of
  PixelFlipping, RegionPerturbation and Selectivity): Quantus 0.6's ``utils.calculate_auc``
  calls ``numpy.trapz``, which NumPy 2 removed (renamed ``numpy.trapezoid``). The subclass's
  methods that call it are Quantus' functions rebuilt over a copy of their module globals in
  which ``utils`` is :class:`_TrapezoidUtils`: Quantus' helpers with ``calculate_auc`` on
  ``numpy.trapezoid`` (the same composite trapezoidal rule). The ``numpy`` module is not
  touched, so nothing else in the process changes.
* **BatchSufficiency**: identical to ``Sufficiency`` (Dasgupta et al. 2022) line for line,
  except that it reshapes the whole batch to one sample's shape before predicting, which fails
  for any batch of more than one sample; the subclass uses ``Sufficiency``'s batch
  preprocessing.
* **ROAD**: Quantus keeps each sample's curve (whether the prediction survives each
  percentage of removed features) only until it averages them over the samples, and then only
  the first batch's; the subclass keeps every sample's curve as :attr:`sample_curves`, the
  input of the per-sample score (:mod:`wrapgrad_quantus.reductions`).
* **SmoothMPRT** (Hedström et al. 2024): Quantus 0.6 explains the noisy copies of the inputs
  with ``quantus.explain`` (Quantus' own explainers: a plain gradient unless ``method`` is
  given), whatever ``explain_func`` the call passes, so the randomised models' explanations
  came from another method than the original ones. The subclass runs Quantus' loop with
  ``quantus.explain`` standing for the call's ``explain_func``.
* **InputInvariance** (Kindermans et al. 2019): the test explains ``f`` at ``x`` and the
  shifted model ``f2(x) = f(x - m)`` at ``x + m`` and asks for equal maps. Quantus 0.6 gets
  both halves wrong: its batch perturbation drops the first index of every sample, so the
  first feature is never shifted, and it builds ``f2`` by absorbing ``-W m`` into the bias of
  the model's first named submodule, which must be a convolution with ``out_channels`` (a
  Linear layer or a Sequential first fails) and is exact only without padding (a padded
  convolution's response to a constant image is not constant at the borders; Quantus keeps
  its smallest value). The subclass's ``evaluate_batch`` (a dozen lines) shifts every feature
  with the metric's ``perturb_func`` and builds ``f2`` exactly for any model
  (:func:`shifted_model`), then compares as Quantus does (``numpy.isclose``, ``atol=1e-4``).
  The result is the paper's: gradients pass, input x gradient and Integrated Gradients with
  a zero baseline fail (``tests/test_quantus_reductions.py``).
* **ModelParameterRandomisation**: Quantus' deprecated alias of ``MPRT`` (a subclass that adds
  nothing but a constructor that prints a rename notice to stdout, on every construction,
  before calling ``MPRT``'s). The subclass's constructor is ``MPRT``'s own: the same metric,
  built without the notice (a library call prints nothing unless asked), and with ``MPRT``'s
  signature, so the bridge sees its options (``disable_warnings``, ``return_aggregate``, ...)
  instead of ``(*args, **kwargs)``.
* **The attribution check** (every metric): Quantus' ``assert_attributions``, run on every
  call's maps, refuses maps whose values are all equal by building a Python ``set`` of every
  value, ``len(set(a_batch.flatten().tolist())) > 1``: 0.127 s of CPU time for one batch of
  64 maps of 3x32x32 (0.011 s here), about 10 s of the demo's evaluate step (a py-spy
  profile). The subclass's
  ``general_preprocess`` and ``explain_batch`` (Quantus' code) call Quantus'
  ``assert_attributions`` rebuilt with ``set`` standing for :func:`_few_distinct`, which stops
  at the first value that differs from the first: the same checks, the same verdicts
  (``tests/test_quantus_checks.py``).
"""

from __future__ import annotations

import copy
import functools
import inspect
import types
from typing import Any

import numpy as np
from torch import nn

__all__ = ["fixed", "shifted_model", "trapezoid"]

#: The composite trapezoidal rule: ``numpy.trapezoid`` (NumPy >= 2), else ``numpy.trapz``.
trapezoid = getattr(np, "trapezoid", None) or np.trapz


class _TrapezoidUtils:
    """``quantus.helpers.utils`` with ``calculate_auc`` on :data:`trapezoid`."""

    def __getattr__(self, name: str) -> Any:
        from quantus.helpers import utils

        return getattr(utils, name)

    @staticmethod
    def calculate_auc(values: Any, dx: int = 1, batched: bool = False) -> Any:
        """Quantus' ``calculate_auc``: the trapezoidal area along the last axis (along axis 1
        for a batch of curves)."""
        return trapezoid(np.array(values), dx=dx, axis=1 if batched else -1)


def _names(code: types.CodeType) -> set[str]:
    """The global and attribute names ``code`` reads, its nested code (comprehensions) too."""
    found = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found |= _names(const)
    return found


def _calls_auc(function: Any) -> bool:
    return inspect.isfunction(function) and "calculate_auc" in _names(function.__code__)


def _over_globals(function: types.FunctionType, **names: Any) -> types.FunctionType:
    """``function`` (Quantus' code, defaults and closure) over a copy of its module globals
    with ``names`` replaced; the module itself is not changed."""
    rebuilt = types.FunctionType(
        function.__code__,
        {**function.__globals__, **names},
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    rebuilt.__kwdefaults__ = function.__kwdefaults__
    rebuilt.__doc__ = function.__doc__
    rebuilt.__qualname__ = function.__qualname__
    return rebuilt


def _trapezoid_methods(cls: type) -> dict[str, Any]:
    """The methods and properties of ``cls`` that call ``utils.calculate_auc``, rebuilt."""
    members: dict[str, Any] = {}
    for name, member in vars(cls).items():
        if isinstance(member, property) and _calls_auc(member.fget):
            fget = _over_globals(member.fget, utils=_TrapezoidUtils())
            members[name] = property(fget, doc=member.__doc__)
        elif _calls_auc(member):
            members[name] = _over_globals(member, utils=_TrapezoidUtils())
    return members


def _sufficiency_members(cls: type) -> dict[str, Any]:
    import quantus

    if cls is not quantus.BatchSufficiency:
        return {}
    return {"custom_batch_preprocess": quantus.Sufficiency.custom_batch_preprocess}


def _road_members(cls: type) -> dict[str, Any]:
    import quantus

    if cls is not quantus.ROAD:
        return {}

    def custom_postprocess(self: Any, **kwargs: Any) -> None:
        # evaluate_batch returns [results (B, P)] per batch; Quantus reads the first only.
        self.sample_curves = np.concatenate(
            [np.asarray(r, dtype=np.float64) for r in self.evaluation_scores], axis=0
        )
        quantus.ROAD.custom_postprocess(self, **kwargs)

    return {"custom_postprocess": custom_postprocess, "sample_curves": None}


def shifted_model(model: nn.Module, shift: float) -> nn.Module:
    """``f2(x) = model(x - shift)``: a shallow copy of ``model`` (its submodules, parameters and
    hooks shared, nothing copied) whose ``forward`` subtracts ``shift`` first, so layer names
    and Captum's hooks find the same modules. The model itself is not changed."""
    twin = copy.copy(model)
    forward = type(model).forward

    def shifted(self: nn.Module, x: Any, *args: Any, **kwargs: Any) -> Any:
        return forward(self, x - shift, *args, **kwargs)

    twin.forward = types.MethodType(shifted, twin)  # its own attribute: the model keeps its own
    return twin


def _invariance_members(cls: type) -> dict[str, Any]:
    import quantus

    if cls is not quantus.InputInvariance:
        return {}

    def evaluate_batch(
        self: Any,
        model: Any,
        x_batch: np.ndarray,
        y_batch: np.ndarray,
        a_batch: np.ndarray,
        **_: Any,
    ) -> np.ndarray:
        """Kindermans et al.'s test on a batch: the maps of ``f2(x) = f(x - m)`` at ``x + m``
        equal those of ``f`` at ``x`` (within Quantus' ``atol=1e-4``), per sample."""
        from wrapgrad_quantus.memo import unwrap

        shift = self.perturb_func.keywords["input_shift"]
        every = np.arange(x_batch[0].size)
        axes = np.arange(x_batch[0].ndim)
        x_shifted = np.stack(
            [self.perturb_func(arr=x, indices=every, indexed_axes=axes) for x in x_batch]
        )
        x_shifted = model.shape_input(
            x=x_shifted, shape=x_shifted.shape, channel_first=True, batched=True
        )
        twin = shifted_model(unwrap(model.get_model()), shift)
        a_shifted = self.explain_batch(twin, x_shifted, y_batch)
        return np.all(
            np.isclose(a_batch, a_shifted, atol=1e-04), axis=tuple(range(1, a_batch.ndim))
        )

    return {"evaluate_batch": evaluate_batch}


class _ExplainWith:
    """Stands for the ``quantus`` module in SmoothMPRT's noisy explanations: its ``explain`` is
    the metric's ``explain_func``."""

    def __init__(self, explain_func: Any) -> None:
        self.explain = explain_func


def _smooth_mprt_members(cls: type) -> dict[str, Any]:
    import quantus

    if cls is not quantus.SmoothMPRT:
        return {}
    noisy = quantus.SmoothMPRT.explain_smooth_batch_numpy

    def explain_smooth_batch_numpy(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _over_globals(noisy, quantus=_ExplainWith(self.explain_func))(self, *args, **kwargs)

    explain_smooth_batch_numpy.__doc__ = noisy.__doc__
    return {"explain_smooth_batch_numpy": explain_smooth_batch_numpy}


def _renamed_members(cls: type) -> dict[str, Any]:
    """ModelParameterRandomisation built by ``MPRT``'s constructor (no rename notice), while it
    is what Quantus 0.6 makes it: a subclass of ``MPRT`` with a constructor of its own only."""
    import quantus

    alias = getattr(quantus, "ModelParameterRandomisation", None)
    own = {k for k in vars(cls) if not (k.startswith("__") and k.endswith("__"))}
    if cls is not alias or cls.__bases__ != (quantus.MPRT,) or own or "__init__" not in vars(cls):
        return {}
    return {"__init__": quantus.MPRT.__init__}


def _few_distinct(values: Any) -> tuple[Any, ...]:
    """Stands for ``set`` in Quantus' ``assert_attributions``, whose one use of it is
    ``len(set(a_batch.flatten().tolist())) > 1``: the first value and the first one that differs
    from it (at most two), so that ``len`` is above 1 exactly when the set's is, without hashing
    every value. NaN differs from everything, as in the set (each NaN of ``tolist()`` is its
    own object); ``0.0`` and ``-0.0`` are equal in both."""
    it = iter(values)
    for first in it:
        for value in it:
            if value != first:
                return (first, value)
        return (first,)
    return ()


@functools.cache
def _fast_asserts() -> types.SimpleNamespace:
    """``quantus.helpers.asserts`` with ``assert_attributions`` over :func:`_few_distinct` (the
    module itself is not changed)."""
    from quantus.helpers import asserts

    fast = types.SimpleNamespace(**vars(asserts))
    fast.assert_attributions = _over_globals(asserts.assert_attributions, set=_few_distinct)
    return fast


def _attribution_check_members(cls: type) -> dict[str, Any]:
    """``general_preprocess`` and ``explain_batch`` of a Quantus metric class (Quantus' base
    class's, or the class's own), rebuilt to check attributions with :func:`_fast_asserts`."""
    members: dict[str, Any] = {}
    for name in ("general_preprocess", "explain_batch"):
        function = getattr(cls, name, None)
        if inspect.isfunction(function) and "assert_attributions" in _names(function.__code__):
            members[name] = _over_globals(function, asserts=_fast_asserts())
    return members


@functools.cache
def fixed(cls: type) -> type:
    """The class the bridge constructs for the Quantus metric class ``cls``: a subclass with the
    repairs above that apply to it, or ``cls`` itself when none does."""
    members: dict[str, Any] = {}
    for repair in (
        _trapezoid_methods,
        _sufficiency_members,
        _road_members,
        _invariance_members,
        _smooth_mprt_members,
        _renamed_members,
        _attribution_check_members,
    ):
        members.update(repair(cls))
    if not members:
        return cls
    members["__doc__"] = cls.__doc__
    members["__module__"] = __name__
    return type(cls.__name__, (cls,), members)
