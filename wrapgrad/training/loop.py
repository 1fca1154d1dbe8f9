"""The one training loop: ``wrapgrad.train(model, data, objective=..., ...)``.

Every training in wrapgrad runs here: robust objectives (PGD-AT, IG-NORM, AAT, ...) and the
reference models' recipes alike. Per step

.. math:: \\theta \\leftarrow \\mathrm{opt}\\big(\\theta, \\nabla_\\theta\\,
          \\mathcal{L}_{\\text{objective}}(f_\\theta, x_b, y_b)\\big),

where the objective (a registered :class:`~wrapgrad.protocols.Objective`, e.g. FAR Eqs. 5-6)
returns the batch's scalar loss and the loop owns the optimiser, the schedule, mixed precision,
gradient clipping, shuffling, the history and the checkpoints.

Reproducible: the shuffling and the objective draw from their own generators (seeded from
``seed``); torch's global RNG (dropout) is seeded inside the run and restored afterwards; all of
it is checkpointed at each epoch's end, so a resumed run gives the weights of an uninterrupted
one bit for bit (same device and thread count).

Extension points (kept for iterative procedures):

* batches come from a :class:`~wrapgrad.training.batches.BatchSource`
  (``epoch_batches(generator)`` and ``len``): tensors
  (shuffled by the loop's generator) or a ``DataLoader`` (its own sampler);
* checkpoints are written by the process of rank 0 only
  (:func:`~wrapgrad.training.checkpoint.is_writer`);
* ``on_epoch_end(record, model)`` runs after each epoch, before its checkpoint is written (so
  state it changes in the model, e.g. a re-shaped noise buffer, is checkpointed too); returning
  True stops the run. Calling ``train`` again with ``resume=True`` and more ``epochs`` continues a
  finished run (with a constant learning rate; a schedule's length is fixed by ``epochs``).

Distributed (under an initialised ``torch.distributed`` process group of more than one process,
e.g. started by ``torchrun``; see ``docs/distributed.md``):

* the data is sharded by :class:`~wrapgrad.training.batches.ShardedBatches`: every rank draws
  the same seeded permutation (the loop's checkpointed shuffle generator) and takes its slice of
  each *global* batch of ``batch_size`` samples, the batches a single process forms; its mean
  loss is weighted by ``W n_r / N`` so the averaged gradient is the global batch's;
* gradients are synchronised by ``DistributedDataParallel``: the objective is called with the
  DDP-wrapped model, so its final loss (and every extra forward pass of an inner maximisation)
  runs through it. DDP all-reduces only when ``backward()`` accumulates into the parameters'
  ``.grad``; inner maximisations and attribution maps differentiate with respect to the
  *inputs* (``torch.autograd.grad``), which never fires the parameters' hooks, so the one
  ``loss.backward()`` of a step is the one all-reduce, double-backward terms included (no
  ``no_sync`` needed). The collectives DDP runs inside forward passes (rank 0's buffers with
  ``broadcast_buffers=True``, the one-time bucket rebuild) run between steps instead
  (:func:`_between_steps`), so the objective's forward passes run none: their number may
  differ between ranks, and a rank whose objective raises reaches the check that fails every
  rank instead of leaving them in a collective;
* each rank draws the objective's noise and dropout from its own stream, seeded from
  ``(seed, epoch, rank)`` at each epoch's start, and epoch metrics are summed over ranks, so
  the history is the same on every rank;
* rank 0 reads the checkpoint on resume and sends it to every rank; rank 0 writes it. The
  checkpoint holds no trace of the number of ranks (``batch_size`` is the global batch), so it
  resumes on any number;
* an exception in a rank's step (its objective, the callback, a checkpoint write) makes every
  rank raise :class:`~wrapgrad.distributed.RankFailedError` naming it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from wrapgrad.checks import (
    check_bool,
    check_choice,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_seed,
)
from wrapgrad.differentiable import check_differentiable
from wrapgrad.distributed import (
    World,
    agree,
    any_rank,
    broadcast_object,
    derived_seed,
    sum_over_ranks,
    world,
)
from wrapgrad.errors import UnknownNameError, WrapgradTypeError, WrapgradValueError
from wrapgrad.training.batches import BatchSource, batch_source, sharded_source, shards
from wrapgrad.training.checkpoint import (
    architecture,
    check_identity,
    checkpoint_path,
    fingerprint,
    is_writer,
    load_checkpoint,
    save_checkpoint,
)
from wrapgrad.training.optim import autocast_context, build_optimizer, build_scheduler
from wrapgrad.training.records import (
    AUTOCAST,
    OPTIMIZERS,
    SCHEDULERS,
    EpochRecord,
    TrainConfig,
    TrainResult,
)

__all__ = ["accuracy", "train"]


# -- the objective ------------------------------------------------------------------------------------
def _objective(
    objective: Any, options: dict[str, Any]
) -> tuple[Callable[..., Tensor], str, dict[str, Any]]:
    """``(objective, name, description)`` from a registered name and its options, or from an
    objective object (then ``options`` must be empty)."""
    from wrapgrad.registry import get_registry

    if isinstance(objective, str):
        spec = get_registry().get("objective", objective, argument="objective")
        names, open_ = spec.option_names()
        if not open_:
            for key in options:
                if key not in names:
                    raise UnknownNameError(
                        key,
                        key,
                        set(names) | _loop_options(),
                        what=f"option of wrapgrad.train or of objective {spec.name!r}",
                    )
        built = spec.factory(**options)
        if not callable(built):
            raise WrapgradTypeError(
                f"objective: the factory of {spec.name!r} returned a {type(built).__name__}, "
                f"not a callable objective"
            )
        return built, spec.name, _describe(built, spec.name, options)
    if not callable(objective):
        raise WrapgradTypeError(
            f"objective: expected a registered objective name or a callable "
            f"(model, inputs, target, generator=None) -> loss, got {type(objective).__name__}"
        )
    if options:
        key = next(iter(options))
        raise WrapgradValueError(
            f"{key}: options go to a registered objective given by name; this objective is "
            f"an object ({type(objective).__name__}), so build it with its options yourself"
        )
    name = (
        getattr(objective, "name", None)
        or getattr(objective, "__name__", None)
        or type(objective).__name__
    )
    return objective, str(name), _describe(objective, str(name), {})


def _loop_options() -> set[str]:
    """The keyword arguments of :func:`train` (an option no objective takes may be a misspelt
    one of these)."""
    from wrapgrad.options import accepted

    return set(accepted(train)[0]) - {"model", "data", "objective"}


def _describe(objective: Any, name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies an objective in a checkpoint: its attrs ``config`` where it has one
    (defaults and explicit options then agree), else its name and options."""
    config = getattr(objective, "config", None)
    if config is not None and attrs.has(type(config)):
        return {"name": name, "config": attrs.asdict(config)}
    return {"name": name, "options": {k: repr(v) for k, v in sorted(options.items())}}


# -- helpers -----------------------------------------------------------------------------------------------
def _device(model: nn.Module, device: Any) -> torch.device:
    if device is None:
        for t in model.parameters():
            return t.device
        return torch.device("cpu")
    try:
        out = torch.device(device)
    except (TypeError, RuntimeError) as exc:
        raise WrapgradValueError(
            f"device: expected a torch device ('cpu', 'cuda', 'cuda:1', ...), got {device!r}"
        ) from exc
    if out.type == "cuda" and out.index is None and torch.cuda.is_available():
        # "cuda" is the current device: cuda:LOCAL_RANK in a process group on NCCL
        out = torch.device("cuda", torch.cuda.current_device())
    return out


def accuracy(model: nn.Module, inputs: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` in eval mode on ``(inputs, labels)`` (no gradients; the
    model's training flags are restored)."""
    flags = [m.training for m in model.modules()]
    device = _device(model, None)
    correct = 0
    try:
        model.eval()
        with torch.no_grad():
            for i in range(0, len(labels), batch_size):
                xb = inputs[i : i + batch_size].to(device)
                yb = labels[i : i + batch_size].to(device)
                correct += int((model(xb).argmax(dim=1) == yb).sum())
    finally:
        for m, flag in zip(model.modules(), flags, strict=True):
            m.training = flag
    return correct / max(1, len(labels))


def _rng_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


def _global_rng_state(device: torch.device) -> dict[str, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def _set_global_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def _seed_global_rng(seed: int, device: torch.device) -> None:
    torch.random.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.default_generators[device.index or 0].manual_seed(seed)


class _Meter:
    """Batch-size-weighted sums of the objective's metrics, kept as tensors (no device
    synchronisation per step)."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.samples = 0

    def add(self, metrics: Mapping[str, Any], n: int) -> None:
        for k, v in metrics.items():
            if n == 0:  # a weight-0 stand-in: the key only
                self.sums.setdefault(k, torch.zeros((), dtype=torch.float64))
                continue
            v = torch.as_tensor(v).detach().to(torch.float64)
            self.sums[k] = self.sums[k] + v * n if k in self.sums else v * n
        self.samples += n

    def means(self) -> dict[str, float]:
        return {k: float(v) / max(1, self.samples) for k, v in self.sums.items()}

    def reduce(self) -> None:
        """Sum the samples and metric sums over every rank (a collective)."""
        keys = sorted(self.sums)
        row = [torch.tensor(float(self.samples))] + [self.sums[k].cpu().reshape(()) for k in keys]
        total = sum_over_ranks(torch.stack([t.to(torch.float64) for t in row]))
        self.samples = round(float(total[0]))
        self.sums = dict(zip(keys, total[1:], strict=True))


def _batch_accuracy(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Natural accuracy of a batch for objectives that do not report one: the model in eval
    mode, without gradients (no dropout draw, no BatchNorm update); flags restored."""
    flags = [m.training for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            out = model(x)
    finally:
        for m, flag in zip(model.modules(), flags, strict=True):
            m.training = flag
    return (out.argmax(dim=1) == y).to(torch.float32).mean()


def _data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped in ``DistributedDataParallel`` (which makes every rank start from rank
    0's parameters and buffers)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index or 0] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def _between_steps(net: nn.Module, model: nn.Module) -> None:
    """The collectives DDP would run inside the next forward pass, run here by every rank
    after each step instead, so that the objective's forward passes run no collective and a
    rank whose objective raises cannot leave the others waiting in one: the one-time
    rebuild of DDP's gradient buckets (``reducer._rebuild_buckets``, which DDP itself calls at
    the same point between iterations under ``Join``), and rank 0's buffers (BatchNorm
    statistics) broadcast to every rank (what ``broadcast_buffers=True`` does before each
    forward pass)."""
    reducer = getattr(net, "reducer", None)
    if reducer is not None and hasattr(reducer, "_rebuild_buckets"):
        reducer._rebuild_buckets()
    with torch.no_grad():
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, src=0)


def _resume_state(path: Any, identity: dict[str, Any], w: World) -> dict[str, Any] | None:
    """The checkpoint to resume from (None: start afresh), read and checked by rank 0 and sent
    to every rank; an unreadable or mismatched one fails on every rank."""
    state, failure = None, None
    if w.main:
        try:
            if path.exists():
                state = load_checkpoint(path)
                check_identity(state.get("identity", {}), identity, path)
        except Exception as exc:
            failure = exc
    agree(failure, f"train: resume from {path}")
    return broadcast_object(state)


def _config(**kw: Any) -> TrainConfig:
    """Check the loop's own arguments and group them."""
    optimizer = kw["optimizer"]
    scheduler = kw["scheduler"]
    return TrainConfig(
        epochs=check_positive_int(kw["epochs"], "epochs"),
        batch_size=check_positive_int(kw["batch_size"], "batch_size"),
        lr=check_positive(kw["lr"], "lr"),
        optimizer=check_choice(
            optimizer.lower() if isinstance(optimizer, str) else optimizer, "optimizer", OPTIMIZERS
        ),
        weight_decay=check_nonnegative(kw["weight_decay"], "weight_decay"),
        optimizer_options=kw["optimizer_options"],
        scheduler=check_choice(
            scheduler.lower() if isinstance(scheduler, str) else scheduler, "scheduler", SCHEDULERS
        ),
        scheduler_options=kw["scheduler_options"],
        max_grad_norm=None
        if kw["max_grad_norm"] is None
        else check_positive(kw["max_grad_norm"], "max_grad_norm"),
        seed=check_seed(kw["seed"]) if kw["seed"] is not None else 0,
        autocast=check_choice(kw["autocast"], "autocast", AUTOCAST),
        checkpoint_dir=kw["checkpoint_dir"],
        resume=check_bool(kw["resume"], "resume"),
        progress=check_bool(kw["progress"], "progress"),
    )


# -- the loop --------------------------------------------------------------------------------------------------
def train(
    model: nn.Module,
    data: Any,
    objective: Any = "aat",
    *,
    epochs: int = 1,
    batch_size: int = 64,
    lr: float = 1e-3,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    optimizer_options: Mapping[str, Any] | None = None,
    scheduler: str | None = None,
    scheduler_options: Mapping[str, Any] | None = None,
    max_grad_norm: float | None = None,
    seed: int = 0,
    device: Any = None,
    autocast: str | None = None,
    checkpoint_dir: Any = None,
    resume: bool = False,
    progress: bool = False,
    eval_data: tuple[Tensor, Tensor] | None = None,
    on_epoch_end: Callable[[EpochRecord, nn.Module], Any] | None = None,
    registry: Any = None,
    **objective_options: Any,
) -> TrainResult:
    """Train ``model`` in place with a registered objective (or an objective object).

    Example::

        import wrapgrad
        result = wrapgrad.train(model, (x, y), objective="adv_aat", epochs=3, lr=1e-4,
                                lam=0.5, epsilon=0.3, checkpoint_dir="runs/advaat")
        result.history[-1].metrics      # {'loss': ..., 'ce_adv': ..., 'attribution': ...}

    Args:
        model: the ``nn.Module`` to train; its parameters change in place (it is moved to
            ``device``). Its training flags are restored at the end.
        data: ``(inputs, labels)`` tensors or a ``torch.utils.data.DataLoader`` of such pairs.
        objective: a registered objective name (``"natural"``, ``"pgd"``, ``"ig_norm"``,
            ``"ig_sum_norm"``, ``"aat"``, ``"adv_aat"``, or a plugin's), or an object
            ``objective(model, inputs, target, generator=None) -> loss``.
        epochs: train until this many epochs are done (counting a resumed checkpoint's).
        batch_size: for tensor data (a DataLoader batches itself).
        lr: the learning rate (the schedule's peak).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``; ``weight_decay`` and
            ``optimizer_options`` (e.g. ``{"momentum": 0.9}``) go to it.
        scheduler: None (constant), ``"one_cycle"`` or ``"cosine"``, stepped per batch, or
            ``"plateau"`` (``ReduceLROnPlateau`` on the epoch's mean loss), stepped per epoch.
        scheduler_options: keyword arguments of the schedule (e.g. ``{"factor": 0.5,
            "patience": 1}`` for ``"plateau"``).
        max_grad_norm: clip the gradients' global norm (None: no clipping).
        seed: seeds shuffling, the objective's random draws and dropout (module docstring); the
            caller's global RNG state is left as it was.
        device: where to train (default: the model's device).
        autocast: None, ``"bfloat16"`` or ``"float16"`` mixed precision.
        checkpoint_dir: write ``checkpoint.pt`` there after every epoch (atomically).
        resume: continue from ``checkpoint_dir``'s checkpoint if there is one (it must be of
            the same architecture, objective and loop settings); else start afresh.
        progress: show a progress bar.
        eval_data: ``(inputs, labels)`` whose natural accuracy is recorded after each epoch.
        on_epoch_end: ``callback(record, model)`` after each epoch; True stops the run.
        registry: the registry to look the objective up in (default: the current one).
        **objective_options: the objective's options (``lam``, ``epsilon``, ``steps``, ...);
            an unknown one raises an error with the closest names.

    Returns:
        A :class:`~wrapgrad.training.records.TrainResult` (``.model``, ``.history``, ...).
    """
    from wrapgrad.registry import use_registry

    if not isinstance(model, nn.Module):
        raise WrapgradTypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise WrapgradValueError("model: it has no parameters that require gradients to train")
    config = _config(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        weight_decay=weight_decay,
        optimizer_options=optimizer_options,
        scheduler=scheduler,
        scheduler_options=scheduler_options,
        max_grad_norm=max_grad_norm,
        seed=seed,
        autocast=autocast,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        progress=progress,
    )
    if on_epoch_end is not None and not callable(on_epoch_end):
        raise WrapgradTypeError(
            f"on_epoch_end: expected a callable (record, model), got {type(on_epoch_end).__name__}"
        )
    w = world()
    if w.distributed:
        source = sharded_source(data, config.batch_size, w.rank, w.size)
    else:
        source = batch_source(data, config.batch_size)
    if eval_data is not None:
        batch_source(eval_data, config.batch_size)  # same checks
    with use_registry(registry):
        obj, name, described = _objective(objective, dict(objective_options))
    dev = _device(model, device)
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    identity = {
        "model": architecture(model),
        "objective": described,
        "loop": config.identity(),
    }
    identity = {k: {"fingerprint": fingerprint(v), "description": v} for k, v in identity.items()}
    with torch.random.fork_rng(devices=_rng_devices(dev)):
        return _run(
            model, params, source, obj, name, config, dev, identity, eval_data, on_epoch_end, w
        )


def _run(
    model: nn.Module,
    params: list[nn.Parameter],
    source: BatchSource,
    objective: Callable[..., Tensor],
    name: str,
    config: TrainConfig,
    device: torch.device,
    identity: dict[str, Any],
    eval_data: tuple[Tensor, Tensor] | None,
    on_epoch_end: Callable[[EpochRecord, nn.Module], Any] | None,
    w: World,
) -> TrainResult:
    from tqdm.auto import tqdm

    start_time = time.perf_counter()
    steps_per_epoch = len(source)
    opt = build_optimizer(params, config)
    sched = build_scheduler(opt, config, config.epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=config.autocast == "float16")
    shuffle = torch.Generator().manual_seed(config.seed)
    draws = torch.Generator().manual_seed(config.seed + 1)
    _seed_global_rng(config.seed + 2, device)
    history: list[EpochRecord] = []
    path = None if config.checkpoint_dir is None else checkpoint_path(config.checkpoint_dir)
    done = 0
    state = _resume_state(path, identity, w) if path is not None and config.resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None:
            sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        shuffle.set_state(state["generators"]["shuffle"])
        draws.set_state(state["generators"]["objective"])
        _set_global_rng_state(state["rng"], device)
        if state.get("objective_state") is not None and hasattr(objective, "load_state_dict"):
            objective.load_state_dict(state["objective_state"])
        history = [EpochRecord.from_dict(d) for d in state["history"]]
        done = int(state["epoch"])
    resumed_from = done
    flags = [m.training for m in model.modules()]
    bar = tqdm(
        total=(config.epochs - done) * steps_per_epoch,
        desc=f"train {name}",
        disable=not config.progress,
        leave=False,
    )
    unchecked = bool(getattr(objective, "needs_input_gradients", False))
    per_epoch = config.scheduler == "plateau"  # stepped on the epoch's loss, not per batch
    net = _data_parallel(model, device) if w.distributed else model
    try:
        for epoch in range(done + 1, config.epochs + 1):
            model.train()
            epoch_start = time.perf_counter()
            meter = _Meter()
            if w.distributed:  # each rank its own streams, resumable at epoch boundaries
                draws.manual_seed(derived_seed(config.seed, "objective", epoch, w.rank))
                _seed_global_rng(derived_seed(config.seed, "dropout", epoch, w.rank), device)
            for shard in shards(source, shuffle):
                xb = shard.inputs.to(device, non_blocking=True)
                yb = shard.labels.to(device, non_blocking=True)
                failure = None
                try:
                    if unchecked:  # before the first step: a model without input gradients
                        check_differentiable(model, xb, argument="model")
                        unchecked = False
                    with autocast_context(config, device):
                        loss = objective(net, xb, yb, generator=draws)
                    if not isinstance(loss, Tensor) or loss.dim() != 0:
                        raise WrapgradTypeError(
                            f"objective: {name!r} must return a scalar loss tensor, got "
                            f"{type(loss).__name__}{tuple(getattr(loss, 'shape', ()))}"
                        )
                except Exception as exc:
                    failure = exc
                agree(failure, f"train: objective {name!r} in epoch {epoch}")
                if shard.weight != 1.0:  # this rank's share of the global batch's mean
                    loss = loss * shard.weight
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if config.max_grad_norm is not None:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                scaler.step(opt)
                scaler.update()
                if sched is not None and not per_epoch:
                    sched.step()
                if w.distributed:
                    _between_steps(net, model)
                metrics = dict(getattr(objective, "metrics", None) or {})
                metrics.setdefault("loss", loss.detach())
                if "accuracy" not in metrics:
                    metrics["accuracy"] = (
                        _batch_accuracy(model, xb, yb) if shard.samples else torch.zeros(())
                    )
                meter.add(metrics, shard.samples)
                bar.update(1)
                if config.progress:
                    bar.set_postfix(epoch=epoch, loss=f"{float(loss.detach()):.3f}", refresh=False)
            if w.distributed:
                meter.reduce()
            means = meter.means()
            if not math.isfinite(means.get("loss", 0.0)):
                raise WrapgradValueError(
                    f"lr: the loss of objective {name!r} became {means['loss']} in epoch {epoch} "
                    f"(the checkpoint of epoch {epoch - 1} is kept); lower lr or set "
                    f"max_grad_norm"
                )
            if sched is not None and per_epoch:
                sched.step(means["loss"])
            record = EpochRecord(
                epoch=epoch,
                metrics=means,
                eval_accuracy=None if eval_data is None else accuracy(model, *eval_data),
                lr=float(opt.param_groups[0]["lr"]),
                seconds=time.perf_counter() - epoch_start,
                samples=meter.samples,
            )
            history.append(record)
            failure, stop = None, False
            try:
                stop = bool(on_epoch_end(record, model)) if on_epoch_end is not None else False
            except Exception as exc:
                failure = exc
            agree(failure, f"train: on_epoch_end after epoch {epoch}")
            stop = any_rank(stop)
            failure = None
            try:
                if path is not None and is_writer():
                    save_checkpoint(
                        path,
                        {
                            "epoch": epoch,
                            "identity": identity,
                            "model": model.state_dict(),
                            "optimizer": opt.state_dict(),
                            "scheduler": None if sched is None else sched.state_dict(),
                            "scaler": scaler.state_dict(),
                            "generators": {
                                "shuffle": shuffle.get_state(),
                                "objective": draws.get_state(),
                            },
                            "rng": _global_rng_state(device),
                            "objective_state": objective.state_dict()
                            if hasattr(objective, "state_dict")
                            else None,
                            "history": [r.to_dict() for r in history],
                        },
                    )
            except Exception as exc:
                failure = exc
            agree(failure, f"train: checkpoint of epoch {epoch}")
            if stop:
                break
    finally:
        bar.close()
        del net  # the DDP wrapper (its hooks go with it)
        for m, flag in zip(model.modules(), flags, strict=True):
            m.training = flag
        for p in params:
            p.grad = None
    return TrainResult(
        model=model,
        history=tuple(history),
        objective=name,
        config=config,
        checkpoint=path,
        resumed_from=resumed_from,
        seconds=time.perf_counter() - start_time,
        world_size=w.size,
    )
