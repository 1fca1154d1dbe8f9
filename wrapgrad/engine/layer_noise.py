"""Input noise on a layer's output (``noise_layer``): SmoothGrad on embeddings.

Token ids cannot take Gaussian noise; their embeddings can. With ``noise_layer="emb"`` the
input perturber acts on the output ``e`` of that module instead of on the inputs: for input
sample ``(k, j)`` it draws ``ẽ = sample(e_k, 1, generator=g_{k,j})`` from the layer's output
``e_k`` on the clean inputs under weight sample ``k`` (so σ = α · (max e − min e) per sample for
:class:`InputGaussian`, Bykov et al. 2022 Eq. 4 applied to the layer), and the shift
``ξ = ẽ − e_k`` is added to the layer's output in every forward pass of that sample's rows.
Each draw therefore explains the perturbed model ``x ↦ f_rest(layer(x) + ξ)``: for path methods
(Integrated Gradients on the layer) inputs and baselines are shifted alike.

The model is never touched: the noise is added by one *global* forward hook
(:func:`torch.nn.modules.module.register_module_forward_hook`), which acts only on the module
of that identity and is removed in ``finally``; no hook is registered on the user's model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.module import register_module_forward_hook

from wrapgrad.captum_adapter import resolve_layer
from wrapgrad.errors import WrapgradTypeError, WrapgradValueError

from .plan import Chunk
from .sampler import Sampler

__all__ = ["LayerNoise"]


class _CapturedError(Exception):
    """Stops a probe forward pass once the layer's output is captured."""


class LayerNoise:
    """The per-sample noise of one chunk on ``name``'s output.

    Args:
        model: the user's model (the module is looked up in it by name).
        name: the dotted module name (``noise_layer``).
        input_sampler: the input perturber, applied to the layer's output.
        sampler: the estimate's draws (its per-sample generators).
        layout: how the explainer expands its batch (``"block"`` or ``"interleave"``), used
            when a forward pass has a multiple of the chunk's rows.
    """

    def __init__(
        self, model: nn.Module, name: str, input_sampler: Any, sampler: Sampler, layout: str
    ) -> None:
        self.module = resolve_layer(model, name, argument="noise_layer")
        self.name = name
        self.input_sampler = input_sampler
        self.sampler = sampler
        self.layout = layout
        self._clean: tuple[int, Tensor] | None = None

    def _output(self, value: Any) -> Tensor:
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

    def clean(self, view: Callable[..., Any], args: tuple[Any, ...], k: int) -> Tensor:
        """The layer's output on the clean batch under weight sample ``k`` (the probe pass stops
        at the layer; the last one is cached)."""
        if self._clean is not None and self._clean[0] == k:
            return self._clean[1]
        captured: list[Any] = []

        def hook(module: nn.Module, _args: Any, output: Any) -> None:
            if module is self.module:
                captured.append(output)
                raise _CapturedError

        grad = torch.enable_grad() if self.sampler.keep_graph else torch.no_grad()
        handle = register_module_forward_hook(hook)
        try:
            with grad, contextlib.suppress(_CapturedError):
                view(*args)
        finally:
            handle.remove()
        if not captured:
            raise WrapgradValueError(
                f"noise_layer: the module {self.name!r} did not run in the model's forward pass"
            )
        out = self._output(captured[0])
        self._clean = (k, out)
        return out

    def noise(self, chunk: Chunk, clean: dict[int, Tensor]) -> Tensor:
        """``ξ`` for ``chunk``'s samples, sample-major: ``(c · B, *layer output)``."""
        grad = torch.enable_grad() if self.sampler.keep_graph else torch.no_grad()
        with grad:
            return torch.cat(
                [
                    self.input_sampler.sample(clean[k], 1, generator=self.sampler.generator(k, j))[
                        0
                    ]
                    - clean[k]
                    for k, j in chunk.items()
                ]
            )

    @contextlib.contextmanager
    def active(self, noise: Tensor) -> Iterator[None]:
        """Add ``noise`` to the layer's output in every forward pass of the block."""

        def hook(module: nn.Module, _args: Any, output: Any) -> Tensor | None:
            if module is not self.module:
                return None
            out = self._output(output)
            rows, n = out.shape[0], noise.shape[0]
            if rows == n:
                return out + noise
            if rows % n:
                raise WrapgradValueError(
                    f"noise_layer: {self.name!r} returned {rows} rows in a call for {n}; the "
                    f"method regroups the batch, so its rows cannot be matched to the samples"
                )
            s = rows // n
            if self.layout == "interleave":
                return out + noise.repeat_interleave(s, dim=0)
            return out + noise.repeat(s, *([1] * (noise.dim() - 1)))

        handle = register_module_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()
