"""A cache of trained reference-model weights in the user's cache directory.

Layout: ``<cache_dir>/models/<model>-<dataset>-seed<seed>-<recipe key>.pt`` (a state dict written
with :func:`torch.save`) beside a ``.json`` record holding the file's SHA-256, the recipe and the
test accuracy. Loading checks the checksum first and then reads the weights with
``torch.load(..., weights_only=True)`` (no pickled code is ever executed); a missing, corrupted or
mismatching file is rebuilt by training again, never trusted. Writes go to a temporary file
renamed into place, so an interrupted run leaves no half-written entry.

The directory is ``$WRAPGRAD_CACHE`` if set, else ``~/.cache/wrapgrad``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from wrapgrad.errors import WrapgradWarning
from wrapgrad.files import atomic_write
from wrapgrad_data.training import build_model, get_recipe, train

__all__ = ["cache_dir", "cache_paths", "pretrained"]

CACHE_ENV = "WRAPGRAD_CACHE"


def cache_dir() -> Path:
    """``$WRAPGRAD_CACHE``, else ``~/.cache/wrapgrad`` (not created until something is stored)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "wrapgrad"


def cache_paths(
    model_name: str, dataset_name: str, seed: int = 0, **overrides: Any
) -> tuple[Path, Path]:
    """``(weights_path, record_path)`` of one cache entry."""
    recipe = get_recipe(model_name, dataset_name, **overrides)
    stem = f"{recipe.model}-{recipe.dataset}-seed{int(seed)}-{recipe.key()}"
    folder = cache_dir() / "models"
    return folder / f"{stem}.pt", folder / f"{stem}.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load(weights: Path, record: Path, model: nn.Module, recipe_key: str) -> str | None:
    """Load a cache entry into ``model``; None on success, else why it cannot be trusted."""
    if not weights.exists() or not record.exists():
        return "missing"
    try:
        meta = json.loads(record.read_text())
    except (OSError, ValueError) as exc:
        return f"unreadable record ({exc})"
    if meta.get("recipe_key") != recipe_key:
        return "recipe mismatch"
    if meta.get("sha256") != _sha256(weights):
        return "checksum mismatch"
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        return f"unloadable weights ({type(exc).__name__}: {exc})"
    return None


def pretrained(
    model_name: str,
    dataset_name: str,
    seed: int = 0,
    *,
    progress: bool = True,
    **overrides: Any,
) -> nn.Module:
    """A reference model trained with its recipe, from the cache or trained now (and cached).

    Args:
        model_name: ``"small_cnn"`` or ``"small_resnet"`` (any registered model).
        dataset_name: ``"mnist"``, ``"cmnist"`` or ``"digits8x8"`` (any registered data set).
        seed: training seed; each seed is its own cache entry.
        progress: show a progress bar while training.
        **overrides: :class:`~wrapgrad_data.training.Recipe` fields (``epochs``, ``lr``, ...,
            ``dataset_options={"limit": 1000}``); a different recipe is a different cache entry.

    Returns:
        The trained model in eval mode. ``model.test_accuracy`` is not set; the accuracy is in
        the cache record (:func:`cache_paths`).

    Example::

        model = pretrained("small_cnn", "mnist")  # trains once (~1 min on 2 cores), then cached
    """
    recipe = get_recipe(model_name, dataset_name, **overrides)
    weights, record = cache_paths(model_name, dataset_name, seed, **overrides)
    from wrapgrad.registry import get_registry

    spec = get_registry().get("dataset", recipe.dataset)
    shape = spec.input_shape
    num_classes = spec.num_classes
    if shape is None or num_classes is None:
        probe = spec.factory(split="test", seed=recipe.data_seed)
        shape, num_classes = tuple(probe.inputs.shape[1:]), probe.num_classes
    model = build_model(recipe, in_channels=shape[0], num_classes=num_classes)
    why = _load(weights, record, model, recipe.key())
    if why is None:
        return model.eval()
    if why != "missing":
        warnings.warn(
            f"cached weights {weights} cannot be trusted ({why}); training them again",
            WrapgradWarning,
            stacklevel=2,
        )
    fields = {f.name: getattr(recipe, f.name) for f in attrs.fields(type(recipe))}
    fields.pop("model")
    fields.pop("dataset")
    result = train(recipe.model, recipe.dataset, seed, progress=progress, **fields)
    state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    atomic_write(weights, lambda tmp: torch.save(state, tmp))
    meta = {
        "recipe_key": recipe.key(),
        "recipe": attrs.asdict(recipe),
        "seed": int(seed),
        "sha256": _sha256(weights),
        "test_accuracy": result.test_accuracy,
        "train_seconds": result.seconds,
        "torch": torch.__version__,
    }
    atomic_write(record, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, default=str)))
    return result.model.eval()
