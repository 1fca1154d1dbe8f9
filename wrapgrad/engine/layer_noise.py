"""Input noise on a layer's output (``noise_layer``): SmoothGrad on embeddings.

Token ids cannot take Gaussian noise; their embeddings can. With ``noise_layer="emb"`` the input
perturber acts on the output ``e`` of that module instead of on the inputs. In every forward
pass of a chunk, the ``B`` rows of sample ``(k, j)`` (and of each copy of them an explainer
makes, e.g. Integrated Gradients' steps) become

.. math:: e + \\xi,\\qquad \\xi = \\operatorname{sample}(e, 1, g_{k,j}) - e,

with a generator ``g_{k,j}`` seeded afresh from the sample's seed in every pass, so one sample
gets the same standard draw in all passes (for :class:`InputGaussian`, σ = α · (max e − min e)
per row, Bykov et al. 2022 Eq. 4 applied to the layer). ``ξ`` is computed from the detached
output and added as a constant, so an explainer's gradients pass through it as through the
clean layer (the noise shifts where the model is evaluated, as input noise does).

The model is never touched: the noise is added by one *global* forward hook
(:func:`torch.nn.modules.module.register_module_forward_hook`) that acts only on the module of
that identity and is removed in ``finally``; no hook is registered on the user's model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.module import register_module_forward_hook

from wrapgrad.captum_adapter import resolve_layer
from wrapgrad.errors import WrapgradTypeError, WrapgradValueError

from .plan import Chunk
from .sampler import Sampler

__all__ = ["LayerNoise"]


class LayerNoise:
    """Per-sample input noise on ``name``'s output.

    Args:
        model: the user's model (the module is looked up in it by name).
        name: the dotted module name (``noise_layer``).
        input_sampler: the input perturber, applied to the layer's output.
        sampler: the estimate's draws (its per-sample generators).
        layout: how the explainer expands its batch (``"block"``: ``torch.cat([batch] * s)``,
            ``"interleave"``: ``repeat_interleave(s)``), for passes with a multiple of the
            chunk's rows.
    """

    def __init__(
        self, model: nn.Module, name: str, input_sampler: Any, sampler: Sampler, layout: str
    ) -> None:
        self.module = resolve_layer(model, name, argument="noise_layer")
        self.name = name
        self.input_sampler = input_sampler
        self.sampler = sampler
        self.layout = layout

    def _checked(self, value: Any) -> Tensor:
        if not isinstance(value, Tensor):
            raise WrapgradTypeError(
                f"noise_layer: {self.name!r} returned {type(value).__name__}; layer noise needs "
                f"a module whose output is one tensor"
            )
        if not value.is_floating_point():
            raise WrapgradValueError(
                f"noise_layer: {self.name!r} returns dtype {value.dtype}; layer noise needs a "
                f"floating-point output (e.g. an embedding, not the token ids)"
            )
        return value

    def noisy(self, out: Tensor, chunk: Chunk, batch: int) -> Tensor:
        """``out`` (the layer's output for ``chunk``'s rows, or a multiple of them) with each
        sample's noise added."""
        out = self._checked(out)
        items = chunk.items()
        c = len(items)
        rows = out.shape[0]
        if rows % (c * batch):
            raise WrapgradValueError(
                f"noise_layer: {self.name!r} returned {rows} rows in a call for {c * batch} "
                f"({c} samples of {batch}); the method regroups the batch, so its rows cannot be "
                f"matched to the samples"
            )
        s = rows // (c * batch)
        rest = out.shape[1:]
        value = out.detach()
        # Index as [copy t, sample i, row b] whatever the layout.
        if self.layout == "interleave":
            blocks = value.reshape(c, batch, s, *rest).movedim(2, 0)
        else:
            blocks = value.reshape(s, c, batch, *rest)
        with torch.no_grad():
            noise = torch.stack(
                [
                    torch.stack(
                        [
                            self.input_sampler.sample(
                                blocks[t, i], 1, generator=self.sampler.generator(k, j)
                            )[0]
                            - blocks[t, i]
                            for i, (k, j) in enumerate(items)
                        ]
                    )
                    for t in range(s)
                ]
            )
        if self.layout == "interleave":
            noise = noise.movedim(0, 2)
        return out + noise.reshape(out.shape)

    @contextlib.contextmanager
    def active(self, chunk: Chunk, batch: int) -> Iterator[None]:
        """Add ``chunk``'s noise to the layer's output in every forward pass of the block."""

        def hook(module: nn.Module, _args: Any, output: Any) -> Tensor | None:
            if module is not self.module:
                return None
            return self.noisy(output, chunk, batch)

        handle = register_module_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()
