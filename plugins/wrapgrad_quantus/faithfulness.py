"""Quantus' FaithfulnessCorrelation with its perturbation plan shared: the same numbers, once.

Faithfulness correlation (Bhatt et al. 2020) of a map ``a`` at an input ``x`` with label ``y``:
for runs ``r = 1..R`` a random subset ``S_r`` of ``|S|`` features is set to a baseline, and the
score is Pearson's correlation over the runs between the attribution the subset holds and the
output drop it causes,

.. math::
    \\mu_F(a; x) = \\operatorname{corr}_r\\Bigl(\\sum_{i \\in S_r} a_i,\\;
    f_y(x) - f_y(x_{[S_r = \\bar x]})\\Bigr).

Quantus draws the subsets from NumPy's global RNG, for each run the ``B`` subsets of a batch
one after another, then perturbs the batch (its ``perturb_func``, which may draw as well) and
predicts. Scoring the 12 maps of a batch (4 enhancer variants x 3 seeds) with the bridge's
seeded calls repeats all of that 12 times, although only the attribution sums depend on the
map: the subsets, the perturbed inputs and the predictions depend on the inputs and the RNG
state alone. Profiled on the demo, drawing the subsets (``numpy.random.choice`` without
replacement shuffles all features for each subset) and checking each perturbed input for
"no change" took more CPU time than the forward passes.

:class:`PlannedFaithfulnessCorrelation` (what the bridge constructs for
``FaithfulnessCorrelation``) keeps Quantus' class and replaces only its ``evaluate_batch``:

* the *plan* of a batch (every run's subsets and perturbed inputs, drawn exactly as Quantus
  draws them, in the same RNG order, and the RNG state after them) is drawn once and kept,
  keyed by the RNG state, the inputs' content and the metric's settings; a later call with the
  same key (the next map of the same batch) replays it and leaves the RNG where Quantus would
  have left it. Only Quantus' own ``perturb_func`` is replayed: a custom one is called afresh
  each time, in the same order;
* the "no change" check (``numpy.allclose`` of each perturbed input with its input) runs once
  per plan on all runs at once, and each call still warns for every unchanged input as Quantus
  does;
* the predictions of the perturbed inputs are computed once per plan and model when the bridge
  shares predictions (``share_predictions = true``: the model is a
  :class:`~wrapgrad_quantus.memo.MemoModel`, whose no-gradient forward is deterministic), and
  always in Quantus' batches (one run of ``B`` inputs per call: larger calls were no faster
  on CPU, and these keep the numbers identical on any machine); without sharing every call
  predicts afresh;
* the attribution sums of all runs are one gather.

The scores equal Quantus' number for number (``tests/test_quantus_faithfulness.py`` compares
them, and the RNG state afterwards, with ``quantus.FaithfulnessCorrelation``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import attrs
import numpy as np

from wrapgrad_quantus.memo import MemoModel, _state

__all__ = ["MAX_PLAN_BYTES", "Plan", "PlannedFaithfulnessCorrelation", "planned"]

#: The perturbed inputs of the plans kept, at most (the least recently used go first): the
#: demo's batch (100 runs x 64 images of 3x32x32 float32) is 79 MB.
MAX_PLAN_BYTES = 256 << 20
#: Kept plans by key (see :func:`_plan_key`).
_PLANS: OrderedDict[Any, Plan] = OrderedDict()


@attrs.define
class Plan:
    """One batch's runs as Quantus draws them."""

    indices: np.ndarray
    """``(R, B, |S|)``: run ``r``'s subset of sample ``i``."""
    perturbed: np.ndarray
    """``(R, B, *x.shape[1:])``: the perturbed inputs of every run."""
    unchanged: list[tuple[int, int]]
    """``(run, sample)`` pairs whose perturbed input equals the input (Quantus warns)."""
    rng_after: Any
    """NumPy's global RNG state after the runs were drawn."""
    predictions: dict[Any, np.ndarray] = attrs.field(factory=dict)
    """The model's outputs on ``perturbed``, ``(R, B, classes)``, by model key."""
    replays: int = 0
    """How often the plan was replayed (a later call with the same key)."""


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.blake2b()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _rng_key(state: tuple[Any, ...]) -> tuple[Any, ...]:
    name, keys, pos, has_gauss, gauss = state
    return (name, _digest(np.asarray(keys)), int(pos), int(has_gauss), float(gauss))


def _replayable(perturb_func: Any) -> bool:
    """Whether ``perturb_func`` is Quantus' default (a function of the array, the indices and
    NumPy's global RNG only), so that a plan drawn with it may be replayed."""
    from quantus.functions.perturb_func import batch_baseline_replacement_by_indices

    return getattr(perturb_func, "func", None) is batch_baseline_replacement_by_indices


def _model_key(model: Any) -> Any:
    """A key for the predictions of Quantus' model wrapper ``model``, or None when they may not
    be shared (the model is not a :class:`MemoModel`)."""
    inner = getattr(model, "model", None)
    if not isinstance(inner, MemoModel):
        return None
    kwargs = getattr(model, "model_predict_kwargs", None) or {}
    return (
        id(inner.model),
        _state(inner.model),
        bool(getattr(model, "softmax", False)),
        str(getattr(model, "device", None)),
        repr(sorted(kwargs.items())),
    )


class PlannedFaithfulnessCorrelation:
    """Mixin for ``quantus.FaithfulnessCorrelation``: its ``evaluate_batch`` with the plan shared
    (see the module docstring); everything else is Quantus'. Build the class with
    :func:`planned`."""

    nr_runs: int
    subset_size: int
    perturb_func: Any
    similarity_func: Any

    def _draw(self, x_batch: np.ndarray, n_features: int) -> Plan:
        """The runs exactly as Quantus' ``evaluate_batch`` draws them."""
        b = x_batch.shape[0]
        flat = x_batch.reshape(b, -1)
        indices, perturbed = [], []
        for _ in range(self.nr_runs):
            a_ix = np.stack(
                [np.random.choice(n_features, self.subset_size, replace=False) for _ in range(b)],
                axis=0,
            )
            indices.append(a_ix)
            perturbed.append(self.perturb_func(arr=flat, indices=a_ix).reshape(*x_batch.shape))
        p = np.stack(perturbed)
        same = np.isclose(x_batch[None], p, equal_nan=True).reshape(self.nr_runs, b, -1).all(-1)
        return Plan(
            indices=np.stack(indices),
            perturbed=p,
            unchanged=[(int(r), int(i)) for r, i in np.argwhere(same)],
            rng_after=np.random.get_state(),
        )

    def _plan(self, x_batch: np.ndarray, n_features: int) -> Plan:
        if not _replayable(self.perturb_func):
            return self._draw(x_batch, n_features)
        fn = self.perturb_func
        key = (
            _rng_key(np.random.get_state()),
            _digest(x_batch),
            self.nr_runs,
            self.subset_size,
            repr(fn.args),
            repr(sorted(fn.keywords.items())),
        )
        plan = _PLANS.get(key)
        if plan is None:
            plan = _PLANS[key] = self._draw(x_batch, n_features)
            while len(_PLANS) > 1 and sum(p.perturbed.nbytes for p in _PLANS.values()) > (
                MAX_PLAN_BYTES
            ):
                _PLANS.popitem(last=False)
        else:
            _PLANS.move_to_end(key)
            np.random.set_state(plan.rng_after)
            plan.replays += 1
        return plan

    def _predictions(self, model: Any, plan: Plan, shape: tuple[int, ...]) -> np.ndarray:
        """``(R, B, classes)``: one Quantus-sized call per run, kept with the plan when the
        model's predictions may be shared."""
        key = _model_key(model)
        if key is not None and key in plan.predictions:
            return plan.predictions[key]
        out = np.stack(
            [
                model.predict(model.shape_input(p, shape, channel_first=True, batched=True))
                for p in plan.perturbed
            ]
        )
        if key is not None:
            plan.predictions = {key: out}  # the latest model only
        return out

    def evaluate_batch(
        self,
        model: Any,
        x_batch: np.ndarray,
        y_batch: np.ndarray,
        a_batch: np.ndarray,
        **kwargs: Any,
    ) -> list[float]:
        """Quantus' ``FaithfulnessCorrelation.evaluate_batch``, the same scores (see the module
        docstring)."""
        from quantus.helpers import warn

        if x_batch.shape != a_batch.shape:
            a_batch = np.broadcast_to(a_batch, x_batch.shape)
        b = a_batch.shape[0]
        a_flat = a_batch.reshape(b, -1)
        rows = np.arange(b)
        x_input = model.shape_input(x_batch, x_batch.shape, channel_first=True, batched=True)
        y_pred = model.predict(x_input)[rows, y_batch]
        plan = self._plan(x_batch, a_flat.shape[-1])
        for r, i in plan.unchanged:  # Quantus' warning, for each input it warns for
            warn.warn_perturbation_caused_no_change(x=x_batch[i], x_perturbed=plan.perturbed[r, i])
        y_perturbed = self._predictions(model, plan, x_batch.shape)[:, rows, y_batch]  # (R, B)
        # Quantus stacks the runs along axis 1: (B, R), C-contiguous, as here.
        pred_deltas = np.ascontiguousarray((y_pred[None] - y_perturbed).T)
        att_sums = np.ascontiguousarray(a_flat[rows[None, :, None], plan.indices].sum(-1).T)
        return self.similarity_func(a=att_sums, b=pred_deltas, batched=True).tolist()


def planned(cls: type) -> type:
    """The class the bridge constructs for ``cls``: for ``quantus.FaithfulnessCorrelation`` (or
    a subclass the bridge built from it) a subclass with :class:`PlannedFaithfulnessCorrelation`'s
    ``evaluate_batch``; any other class as it is."""
    import quantus

    if not issubclass(cls, quantus.FaithfulnessCorrelation) or issubclass(
        cls, PlannedFaithfulnessCorrelation
    ):
        return cls
    return type(
        cls.__name__,
        (PlannedFaithfulnessCorrelation, cls),
        {"__doc__": cls.__doc__, "__module__": __name__},
    )
