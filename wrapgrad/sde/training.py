"""Iterative training of neural SDEs (Jha et al. 2022, Figure 2) on the shared loop.

The paper trains an attribution-shaped SDE in rounds: train with the current noise, recompute
every example's attribution map with the model just trained, reshape the noise
(``Σ_next = Σ Â(x)``), repeat "until the training loss converges". :func:`train_sde` runs that
loop as **one** :func:`wrapgrad.train` call, with the round boundaries in its ``on_epoch_end``:

.. code-block:: text

    round r = 1, 2, ..., rounds:
        E = epochs_per_round epochs of wrapgrad.train (objective, optimiser, schedule: the loop's)
        L_r = the mean training loss of the round's last epoch
        stop if L_r has not improved on min_k<r L_k by more than min_delta * |best| for
             `patience` rounds in a row (None: never), or r == rounds
        else: sde.refresh_guide(x, y)   # the guide model := the current weights; maps of x

The maps are computed once per round and stored by example content (:mod:`wrapgrad.sde.guide`),
so the epochs of a round reuse them: shaping costs one attribution pass over the training data
per round (``refresh_fraction < 1`` refreshes a rotating share of it: the other maps stay those
of an earlier round). The first round has no maps: its shaped noise is Brownian, the paper's
"we start with uniform noise". For an SDE whose noise is not shaped (Brownian, or ``sigma=0``:
the plain ResNet) the rounds only split the epochs, and the same stopping rule applies, so all
three models of the paper's comparison train with one procedure.

Defaults are the paper's ("Experimental Results"): Adam, learning rate 1e-4, ``ReduceLROnPlateau``
(the loop's ``scheduler="plateau"``, on the epoch loss); σ = 0.5 is :func:`wrapgrad.to_sde`'s.

Checkpoints: the loop writes ``checkpoint.pt`` after every epoch; the objective it is handed here
carries the guide model's weights, the stored maps and the round log in its ``state_dict()``, so
a run resumed from any epoch (``resume=True``) gives the weights of an uninterrupted one bit for
bit, and a run that stopped (converged) stays stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch
from torch import Tensor

from wrapgrad.checks import check_in_range, check_nonnegative, check_positive_int
from wrapgrad.errors import WrapgradTypeError, WrapgradValueError
from wrapgrad.options import Part, accepted, route
from wrapgrad.sde.model import NeuralSDE
from wrapgrad.training import TrainResult, checkpoint_path, load_checkpoint
from wrapgrad.training import train as train_loop
from wrapgrad.training.loop import _objective
from wrapgrad.training.records import FIXED_LENGTH_SCHEDULERS

__all__ = ["PAPER_LOOP", "RoundRecord", "RoundsConfig", "SDETrainResult", "train_sde"]

#: The paper's optimisation (Jha et al. 2022, "Experimental Results"): Adam, lr 1e-4,
#: ReduceLROnPlateau (its factor and patience are not given: torch's defaults).
PAPER_LOOP: dict[str, Any] = {"optimizer": "adam", "lr": 1e-4, "scheduler": "plateau"}

#: Options of wrapgrad.train that train_sde sets itself.
_OWN = frozenset({"model", "data", "objective", "on_epoch_end", "registry", "epochs"})


def _optional_patience(value: Any) -> int | None:
    return None if value is None else check_positive_int(value, "patience")


@attrs.frozen(kw_only=True)
class RoundsConfig:
    """The rounds of :func:`train_sde` (the loop's own options go to :func:`wrapgrad.train`)."""

    rounds: int = attrs.field(default=10, converter=lambda v: check_positive_int(v, "rounds"))
    """At most this many rounds."""
    epochs_per_round: int = attrs.field(
        default=4, converter=lambda v: check_positive_int(v, "epochs_per_round")
    )
    """Epochs between two refreshes of the maps. A refresh costs about one epoch's forward and
    backward passes without the optimiser step (measured: ``benchmarks/bench_sde.py``), so
    rounds of 4 epochs keep shaping within the paper's 36% over Brownian training."""
    patience: int | None = attrs.field(default=1, converter=_optional_patience)
    """Stop when the round loss has not improved for this many rounds in a row (None: run all
    ``rounds``, a fixed budget)."""
    min_delta: float = attrs.field(
        default=1e-3, converter=lambda v: check_nonnegative(v, "min_delta")
    )
    """An improvement is a round loss below ``best - min_delta * |best|``."""
    refresh_fraction: float = attrs.field(
        default=1.0,
        converter=lambda v: check_in_range(v, "refresh_fraction", 0.0, 1.0, low_open=True),
    )
    """Share of the training examples whose maps each refresh recomputes, rotating through a
    seeded permutation (1: all of them)."""

    @property
    def epochs(self) -> int:
        """The most epochs the rounds can take."""
        return self.rounds * self.epochs_per_round


@attrs.frozen(kw_only=True)
class RoundRecord:
    """One round of :func:`train_sde`."""

    round: int
    """1-based."""
    epoch: int
    """The round's last epoch (1-based, counted over the whole run)."""
    loss: float
    """The mean training loss of that epoch (the quantity the stopping rule watches)."""
    improved: bool
    """Whether it improved on the best earlier round by more than ``min_delta``."""
    refreshed: int
    """Maps recomputed after the round (0: none; -1: all on demand, data from a DataLoader)."""
    refresh_seconds: float
    train_seconds: float
    """Wall-clock time of the round's epochs (as the loop measured them)."""

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RoundRecord:
        return cls(**{f.name: d[f.name] for f in attrs.fields(cls)})


@attrs.frozen(kw_only=True)
class SDETrainResult:
    """What :func:`train_sde` returns."""

    train: TrainResult
    """The loop's result (``.model`` is the SDE, ``.history`` one record per epoch)."""
    rounds: tuple[RoundRecord, ...]
    stopped: str
    """Why it ended: ``"converged"`` (patience), ``"rounds"`` (all done), ``"callback"``
    (``on_round_end`` returned True), or ``"running"`` (the loop ended otherwise)."""
    config: RoundsConfig

    @property
    def model(self) -> NeuralSDE:
        return self.train.model  # type: ignore[return-value]

    @property
    def refresh_seconds(self) -> float:
        """Time spent recomputing maps (the cost of shaping)."""
        return float(sum(r.refresh_seconds for r in self.rounds))

    @property
    def train_seconds(self) -> float:
        """Time spent in the epochs."""
        return float(sum(r.seconds for r in self.train.history))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no weights)."""
        return {
            **self.train.to_dict(),
            "rounds": [r.to_dict() for r in self.rounds],
            "stopped": self.stopped,
            "rounds_config": attrs.asdict(self.config),
            "refresh_seconds": self.refresh_seconds,
        }


@attrs.frozen
class _Identity:
    """What identifies the training in a checkpoint: the objective and the rounds."""

    objective: Any
    rounds: RoundsConfig


class _RoundObjective:
    """The objective the loop is handed: the user's objective, plus the round state (round log,
    guide model weights, stored maps) in ``state_dict()``, which the loop checkpoints after every
    epoch and restores on resume."""

    def __init__(
        self,
        inner: Callable[..., Tensor],
        name: str,
        described: Any,
        sde: NeuralSDE,
        config: RoundsConfig,
    ) -> None:
        self.inner = inner
        self.name = name
        self.config = _Identity(objective=described, rounds=config)
        self.needs_input_gradients = bool(getattr(inner, "needs_input_gradients", False))
        self.sde = sde
        self.log: list[RoundRecord] = []
        self.best: float | None = None
        self.bad = 0
        self.stopped = "running"

    @property
    def metrics(self) -> Any:
        return getattr(self.inner, "metrics", None)

    def __call__(
        self, model: Any, inputs: Tensor, target: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        return self.inner(model, inputs, target, generator=generator)

    def state_dict(self) -> dict[str, Any]:
        inner = getattr(self.inner, "state_dict", None)
        return {
            "rounds": [r.to_dict() for r in self.log],
            "best": self.best,
            "bad": self.bad,
            "stopped": self.stopped,
            "guide": self.sde.guide_state(),
            "inner": inner() if callable(inner) else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.log = [RoundRecord.from_dict(d) for d in state["rounds"]]
        self.best = state["best"]
        self.bad = int(state["bad"])
        self.stopped = str(state["stopped"])
        self.sde.load_guide_state(state["guide"])
        if state.get("inner") is not None and hasattr(self.inner, "load_state_dict"):
            self.inner.load_state_dict(state["inner"])

    def end_of_epoch(self, epoch: int, loss: float, seconds: float) -> bool | None:
        """The round bookkeeping at an epoch's end: None mid-round, else whether to stop."""
        c = self.config.rounds
        if epoch % c.epochs_per_round:
            return None
        improved = self.best is None or loss < self.best - c.min_delta * abs(self.best)
        if improved:
            self.best, self.bad = loss, 0
        else:
            self.bad += 1
        if c.patience is not None and self.bad >= c.patience:
            self.stopped = "converged"
        elif epoch // c.epochs_per_round >= c.rounds:
            self.stopped = "rounds"
        self.log.append(
            RoundRecord(
                round=epoch // c.epochs_per_round,
                epoch=epoch,
                loss=float(loss),
                improved=bool(improved),
                refreshed=0,
                refresh_seconds=0.0,
                train_seconds=float(seconds),
            )
        )
        return self.stopped != "running"


def _split_options(
    objective: Any, options: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(rounds, loop, objective)`` options."""
    loop_names = set(accepted(train_loop)[0]) - _OWN
    parts = [Part("rounds", {f.name for f in attrs.fields(RoundsConfig)}), Part("loop", loop_names)]
    if isinstance(objective, str):
        from wrapgrad.registry import get_registry

        names, open_ = (
            get_registry().get("objective", objective, argument="objective").option_names()
        )
        parts.append(Part("objective", names, open_))
    routed = route(options, parts, argument="options")
    return routed["rounds"], routed["loop"], routed.get("objective", {})


def _tensors(data: Any) -> tuple[Tensor, Tensor] | None:
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, Tensor) for t in data)
    ):
        return data[0], data[1]
    return None


def _stopped_epoch(loop: Mapping[str, Any]) -> int | None:
    """The last epoch of a checkpointed run that stopped (None: none, or still running)."""
    directory = loop.get("checkpoint_dir")
    if directory is None or not loop.get("resume"):
        return None
    path = checkpoint_path(directory)
    if not path.exists():
        return None
    state = load_checkpoint(path)
    own = state.get("objective_state") or {}
    if isinstance(own, Mapping) and own.get("stopped", "running") != "running":
        return int(state["epoch"])
    return None


def train_sde(
    sde: NeuralSDE,
    data: Any,
    objective: Any = "natural",
    *,
    on_round_end: Callable[[RoundRecord, NeuralSDE], Any] | None = None,
    **options: Any,
) -> SDETrainResult:
    """Train a neural SDE in rounds (Jha et al. 2022, Figure 2); see the module docstring.

    Example::

        import wrapgrad
        from wrapgrad.sde import train_sde
        sde = wrapgrad.to_sde(resnet, noise="attribution_shaped", seed=0)
        result = train_sde(sde, (x, y), rounds=5, epochs_per_round=4, lr=1e-3,
                           checkpoint_dir="runs/shaped")
        [(r.round, r.loss, r.refresh_seconds) for r in result.rounds]

    Args:
        sde: the :class:`~wrapgrad.sde.model.NeuralSDE` (from :func:`wrapgrad.to_sde`); it is
            trained in place, the model it was converted from is never touched.
        data: ``(inputs, labels)`` tensors (the maps are refreshed for the labels) or a
            ``DataLoader`` (every map is then computed on demand, once per round, for the guide
            model's predicted class).
        objective: the loop's objective, by name (default ``"natural"``: cross-entropy, as the
            paper trains) or as an object.
        on_round_end: ``callback(record, sde)`` after each round (before the maps are
            refreshed); True stops the run.
        **options: the fields of :class:`RoundsConfig` (``rounds``, ``epochs_per_round``,
            ``patience``, ``min_delta``, ``refresh_fraction``), any option of
            :func:`wrapgrad.train` but ``epochs`` (``lr``, ``batch_size``, ``scheduler``,
            ``scheduler_options``, ``seed``, ``checkpoint_dir``, ``resume``, ``eval_data``,
            ``progress``, ...; :data:`PAPER_LOOP` by default), and a named objective's options.

    Returns:
        An :class:`SDETrainResult` (the loop's result, one :class:`RoundRecord` per round, why
        it stopped).
    """
    if not isinstance(sde, NeuralSDE):
        raise WrapgradTypeError(
            f"sde: expected a NeuralSDE (convert the model with wrapgrad.to_sde), got "
            f"{type(sde).__name__}"
        )
    if on_round_end is not None and not callable(on_round_end):
        raise WrapgradTypeError(
            f"on_round_end: expected a callable (record, sde), got {type(on_round_end).__name__}"
        )
    if "epochs" in options:
        raise WrapgradValueError(
            f"epochs: train_sde runs rounds x epochs_per_round epochs; give rounds= and "
            f"epochs_per_round= instead of epochs={options['epochs']!r}"
        )
    own, loop, objective_options = _split_options(objective, options)
    config = RoundsConfig(**own)
    loop = {**PAPER_LOOP, **loop}
    if config.patience is not None and loop.get("scheduler") in FIXED_LENGTH_SCHEDULERS:
        raise WrapgradValueError(
            f"scheduler: {loop['scheduler']!r} fixes the schedule to rounds x epochs_per_round = "
            f"{config.epochs} epochs, but the run may stop sooner (patience={config.patience}); "
            f"use 'plateau' (the paper's), None, or patience=None (a fixed budget)"
        )
    tensors = _tensors(data)
    if config.refresh_fraction < 1 and tensors is None:
        raise WrapgradValueError(
            "refresh_fraction: a partial refresh needs (inputs, labels) tensors as data; with a "
            "DataLoader every map is computed on demand"
        )
    inner, name, described = _objective(objective, dict(objective_options))
    wrapped = _RoundObjective(inner, name, described, sde, config)
    seed = int(loop.get("seed", 0) or 0)
    order = None
    if tensors is not None and config.refresh_fraction < 1:
        order = torch.randperm(len(tensors[0]), generator=torch.Generator().manual_seed(seed))
    round_seconds: list[float] = []

    def on_epoch_end(record: Any, model: Any) -> bool:
        round_seconds.append(record.seconds)
        stop = wrapped.end_of_epoch(record.epoch, record.loss, sum(round_seconds))
        if stop is None:
            return False
        round_seconds.clear()
        if on_round_end is not None and on_round_end(wrapped.log[-1], sde):
            wrapped.stopped = "callback"
            stop = True
        if stop or not sde.needs_guide:
            return bool(stop)
        started = time.perf_counter()
        refreshed = _refresh(sde, tensors, config, wrapped.log[-1].round, order)
        wrapped.log[-1] = attrs.evolve(
            wrapped.log[-1], refreshed=refreshed, refresh_seconds=time.perf_counter() - started
        )
        return False

    epochs = _stopped_epoch(loop) or config.epochs
    result = train_loop(sde, data, wrapped, epochs=epochs, on_epoch_end=on_epoch_end, **loop)
    return SDETrainResult(
        train=result, rounds=tuple(wrapped.log), stopped=wrapped.stopped, config=config
    )


def _refresh(
    sde: NeuralSDE,
    tensors: tuple[Tensor, Tensor] | None,
    config: RoundsConfig,
    round_index: int,
    order: Tensor | None,
) -> int:
    """Recompute the maps after round ``round_index``; the number recomputed (-1: on demand)."""
    if tensors is None:
        sde.refresh_guide()
        return -1
    x, y = tensors
    device = next(sde.parameters()).device
    if order is None:
        sde.refresh_guide(x.to(device), y.to(device))
        return len(x)
    m = math.ceil(config.refresh_fraction * len(x))
    start = ((round_index - 1) * m) % len(x)
    idx = order.roll(-start)[:m]
    sde.refresh_guide(x[idx].to(device), y[idx].to(device), keep=True)
    return m
