"""Per-example guide maps of a neural SDE, kept between training rounds.

The attribution-shaped SDE of Jha et al. (2022) is trained in rounds (their Figure 2): train,
recompute each example's attribution map with the model of the round just finished, reshape the
noise, repeat. Training loops hand the model batches, not example indices, so the maps are
stored by the *content* of the example they belong to: a BLAKE2b digest of its bytes, dtype and
shape. A batch drawn in any order, from any loader, finds its maps again without the loop
knowing anything about them; an example never seen before (e.g. an augmented view) is a miss,
which the model computes on demand.

The store keeps maps as the perturber prepared them (for ``attribution_shaped``: ``|Â|``
averaged over channels, one float per pixel), so the outlier clipping and normalisation run once
per example and round, not once per forward pass.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from wrapgrad.errors import WrapgradValueError

__all__ = ["GuideStore", "example_keys"]


def example_keys(inputs: Tensor) -> list[bytes]:
    """One 16-byte digest per example of ``inputs`` ``(B, ...)`` (its bytes, dtype and shape).

    Equal examples get equal keys on any device (the bytes are read on the CPU)."""
    rows = inputs.detach().to("cpu").contiguous()
    tag = f"{rows.dtype}{tuple(rows.shape[1:])}".encode()
    flat = rows.reshape(rows.shape[0], -1).view(torch.uint8)
    keys = []
    for i in range(rows.shape[0]):
        h = hashlib.blake2b(tag, digest_size=16)
        h.update(flat[i].numpy().tobytes())
        keys.append(h.digest())
    return keys


class GuideStore:
    """Prepared guide maps by example content (see the module docstring)."""

    def __init__(self) -> None:
        self._maps: dict[bytes, Tensor] = {}

    def __len__(self) -> int:
        return len(self._maps)

    def clear(self) -> None:
        """Forget every map (a new round starts)."""
        self._maps.clear()

    def put(self, inputs: Tensor, prepared: Tensor, keys: list[bytes] | None = None) -> None:
        """Store ``prepared[i]`` as the map of example ``inputs[i]``."""
        if prepared.shape[0] != inputs.shape[0]:
            raise WrapgradValueError(
                f"guide: expected one map per example ({inputs.shape[0]}), got {prepared.shape[0]}"
            )
        keys = example_keys(inputs) if keys is None else keys
        for key, row in zip(keys, prepared.detach(), strict=True):
            self._maps[key] = row

    def items(self) -> tuple[Tensor, list[Tensor]]:
        """``(keys, maps)``: the keys as a ``(N, 16)`` uint8 tensor and the maps in the same order
        (plain tensors, for a checkpoint read with ``weights_only=True``)."""
        keys = list(self._maps)
        table = torch.tensor([list(k) for k in keys], dtype=torch.uint8).reshape(len(keys), 16)
        return table, [self._maps[k] for k in keys]

    def restore(self, keys: Tensor, maps: list[Tensor]) -> None:
        """Replace the store by ``(keys, maps)`` from :meth:`items`."""
        if len(keys) != len(maps):
            raise WrapgradValueError(
                f"guide: expected one map per key ({len(keys)}), got {len(maps)}"
            )
        self._maps = {bytes(k.tolist()): m for k, m in zip(keys, maps, strict=True)}

    def lookup(self, inputs: Tensor) -> tuple[list[Tensor | None], list[bytes]]:
        """``(maps, keys)``: each example's stored map (None where missing) and its key."""
        keys = example_keys(inputs)
        return [self._maps.get(k) for k in keys], keys
