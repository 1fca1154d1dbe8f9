"""Training checkpoints: written atomically, read with ``weights_only=True``, checked on resume.

One file, ``<checkpoint_dir>/checkpoint.pt``, rewritten after every epoch through
:func:`wrapgrad.files.atomic_write` (a temporary file renamed into place), so an interrupted run
(an exception, ``KeyboardInterrupt``, a killed process) leaves the previous epoch's checkpoint
whole and loses at most the epoch in progress. It holds plain tensors and containers only:

* ``model``, ``optimizer``, ``scheduler``, ``scaler``: the state dicts;
* ``generators``: the states of the shuffling and objective generators; ``rng``: torch's
  global CPU (and CUDA) RNG states inside the run;
* ``epoch``, ``history`` (one dict per epoch), ``objective_state`` (an objective's own
  ``state_dict()``, if it has one);
* ``identity``: fingerprints (and readable descriptions) of the architecture, the objective and
  the loop settings, compared on resume: a checkpoint of another model, objective or setting is
  refused with an error naming the argument that differs.

Only the process of rank 0 writes (:func:`is_writer`), so a distributed run writes one file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wrapgrad.errors import WrapgradValueError
from wrapgrad.files import atomic_write

__all__ = [
    "FILENAME",
    "FORMAT",
    "architecture",
    "check_identity",
    "checkpoint_path",
    "fingerprint",
    "is_writer",
    "load_checkpoint",
    "save_checkpoint",
]

FORMAT = "wrapgrad.train/1"
FILENAME = "checkpoint.pt"


def checkpoint_path(directory: str | Path) -> Path:
    """The checkpoint file of ``directory``."""
    return Path(directory) / FILENAME


def fingerprint(description: Any) -> str:
    """A short hash of a JSON-able description (``repr`` for anything else)."""
    blob = json.dumps(description, sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def architecture(model: nn.Module) -> dict[str, Any]:
    """What identifies a model's architecture: its class and every parameter's and buffer's
    name, shape and dtype (not the values, nor the device)."""

    def rows(named: Any) -> list[list[Any]]:
        return [[n, list(t.shape), str(t.dtype).replace("torch.", "")] for n, t in named]

    return {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "parameters": rows(model.named_parameters()),
        "buffers": rows(model.named_buffers()),
    }


def is_writer() -> bool:
    """Whether this process writes checkpoints: always, unless ``torch.distributed`` is
    initialised and this is not rank 0 (:func:`wrapgrad.distributed.world`)."""
    from wrapgrad.distributed import world

    return world().main


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically to ``path`` (the old file stays whole if this fails)."""
    return atomic_write(path, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no pickled code runs), on the CPU."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WrapgradValueError(
            f"checkpoint_dir: {path} cannot be read as a wrapgrad training checkpoint "
            f"({type(exc).__name__}: {exc}); remove it or pass resume=False"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise WrapgradValueError(
            f"checkpoint_dir: {path} is not a {FORMAT} checkpoint (found {found!r})"
        )
    return state


#: identity key -> (argument named in the error, what it is)
_IDENTITY = {
    "model": ("model", "architecture"),
    "objective": ("objective", "objective"),
    "loop": ("resume", "loop settings"),
}


def check_identity(saved: dict[str, Any], expected: dict[str, Any], path: Path) -> None:
    """Refuse to resume from a checkpoint whose architecture, objective or loop settings differ
    from this run's; the error names the argument and shows both descriptions."""
    for key, (argument, what) in _IDENTITY.items():
        mine, theirs = expected[key], saved.get(key, {})
        if mine["fingerprint"] == theirs.get("fingerprint"):
            continue
        if key == "loop":
            old, new = theirs.get("description", {}), mine["description"]
            differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if differ:
                name = differ[0]
                raise WrapgradValueError(
                    f"{name}: the checkpoint in {path.parent} was written with {name}="
                    f"{old.get(name)!r}, this run asks for {new.get(name)!r}; resume with the "
                    f"same setting, or pass resume=False (or another checkpoint_dir)"
                )
        raise WrapgradValueError(
            f"{argument}: the checkpoint in {path.parent} was written for another {what} "
            f"({_short(theirs.get('description'))}), not this run's ({_short(mine['description'])})"
            f"; pass resume=False or another checkpoint_dir"
        )


def _short(description: Any) -> str:
    text = json.dumps(description, sort_keys=True, default=repr)
    return text if len(text) <= 160 else text[:157] + "..."
