"""Models that are not ``tensor -> tensor``: output selection and keyword inputs.

Captum's methods call ``forward_func(*inputs, *additional_forward_args)`` and need a tensor back.
Hugging Face models return a ``ModelOutput`` (or a dict or a tuple) and take keyword tensors
(``input_ids``, ``attention_mask``). :class:`AdaptedExplainer` bridges the two *around* the
explainer: each call hands the explainer an :class:`AdaptedView` of the model (or of the
functional view an enhancer built) that

* maps positional arguments back to the model's keywords (the explained inputs first, then the
  ``forward_kwargs``, which travel as Captum's ``additional_forward_args`` so that Captum and the
  enhancers tile them with the batch), and
* selects one tensor from what the model returns (``output=``).

The user's model is never wrapped or changed itself, so parameter and layer names stay the
model's own (``include="bert.*"``, ``layer="bert.embeddings"``, ``noise_layer=...``).

Output selection (``output=``):

* ``None`` (default): a tensor is used as it is; from a ``ModelOutput`` or dict the entry
  ``"logits"``, else its only tensor entry; from a tuple or list its first element;
* a string: that key (``ModelOutput`` attribute or dict key);
* an int: that position of a tuple/list (or of a ``ModelOutput``'s values);
* a callable: ``output(out) -> tensor``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from wrapgrad.errors import WrapgradTypeError, WrapgradValueError
from wrapgrad.records import ExplainerTraits, traits_of

__all__ = ["AdaptedExplainer", "AdaptedView", "select_output"]


def _keys(out: Any) -> list[str]:
    return [str(k) for k in out] if isinstance(out, Mapping) else []


def select_output(out: Any, output: Any = None) -> Tensor:
    """The tensor ``output`` selects from a model's return value (see the module docstring)."""
    if callable(output):
        chosen = output(out)
        if not isinstance(chosen, Tensor):
            raise WrapgradTypeError(
                f"output: the selector returned {type(chosen).__name__}, expected a tensor"
            )
        return chosen
    if output is None:
        if isinstance(out, Tensor):
            return out
        if isinstance(out, Mapping):
            if "logits" in out:
                return out["logits"]
            tensors = [k for k, v in out.items() if isinstance(v, Tensor)]
            if len(tensors) == 1:
                return out[tensors[0]]
            raise WrapgradValueError(
                f"output: the model returns {type(out).__name__} with entries {_keys(out)} and no "
                f"'logits'; pass output= one of them"
            )
        if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
            return out[0]
        raise WrapgradTypeError(
            f"model: expected the forward pass to return a tensor, a ModelOutput/dict with "
            f"'logits' or a tuple of tensors, got {type(out).__name__}; pass output= a selector"
        )
    if isinstance(output, str):
        if isinstance(out, Mapping) and output in out and isinstance(out[output], Tensor):
            return out[output]
        known = _keys(out) or [f"(the model returns {type(out).__name__})"]
        raise WrapgradValueError(
            f"output: the model's output has no tensor entry {output!r}; it has {known}"
        )
    if isinstance(output, int) and not isinstance(output, bool):
        values = list(out.values()) if isinstance(out, Mapping) else out
        if isinstance(values, (tuple, list)) and -len(values) <= output < len(values):
            chosen = values[output]
            if isinstance(chosen, Tensor):
                return chosen
        size = len(values) if isinstance(values, (tuple, list)) else "no"
        raise WrapgradValueError(
            f"output: index {output} does not select a tensor of the model's output "
            f"({type(out).__name__} with {size} entries)"
        )
    raise WrapgradTypeError(
        f"output: expected None, a key, an index or a callable, got {type(output).__name__}"
    )


class AdaptedView(nn.Module):
    """``model`` (the user's model or a functional view of it) called with keywords, its output
    selected. ``view(*args)``: the last ``len(extra_names)`` arguments are the forward keywords;
    of the others, the first ``len(input_names)`` are the explained inputs passed as those
    keywords (positionally when ``input_names`` is empty) and the rest positional extras."""

    def __init__(
        self,
        model: Callable[..., Any],
        *,
        output: Any = None,
        input_names: Sequence[str] = (),
        extra_names: Sequence[str] = (),
        select: bool = True,
    ) -> None:
        super().__init__()
        self.model = model
        self.output = output
        self.select = select
        self.input_names = tuple(input_names)
        self.extra_names = tuple(extra_names)
        self.training = getattr(model, "training", False)

    def forward(self, *args: Any) -> Tensor:
        n_kw = len(self.extra_names)
        head = args[: len(args) - n_kw] if n_kw else args
        kwargs = dict(zip(self.extra_names, args[len(args) - n_kw :], strict=True)) if n_kw else {}
        positional = head
        if self.input_names:
            kwargs.update(zip(self.input_names, head[: len(self.input_names)], strict=True))
            positional = head[len(self.input_names) :]
        out = self.model(*positional, **kwargs)
        return select_output(out, self.output) if self.select else out


class AdaptedExplainer:
    """An explainer that sees every model through an :class:`AdaptedView`.

    Args:
        explainer: the explainer.
        output: the output selector (see :func:`select_output`).
        input_names: keyword names of the explained inputs (empty: positional).
        extra_names: keyword names of the forward keywords passed as the last
            ``additional_forward_args``.
    """

    def __init__(
        self,
        explainer: Any,
        *,
        output: Any = None,
        input_names: Sequence[str] = (),
        extra_names: Sequence[str] = (),
    ) -> None:
        self.explainer = explainer
        self.output = output
        self.input_names = tuple(input_names)
        self.extra_names = tuple(extra_names)
        base = traits_of(explainer)
        keywords = bool(self.input_names or self.extra_names)
        # Keyword calls and selected outputs are not what StackedView vmaps: loop instead.
        self.traits: ExplainerTraits = base.evolve(
            vmap_layout=None if keywords or output is not None else base.vmap_layout
        )
        self.family = self.traits.family
        self.name = self.traits.name

    def view(self, model: Callable[..., Any], *, select: bool = True) -> AdaptedView:
        """``model`` seen through the adapter (``select=False``: keywords mapped, the output
        returned as the model returns it)."""
        return AdaptedView(
            model,
            output=self.output,
            input_names=self.input_names,
            extra_names=self.extra_names,
            select=select,
        )

    def __call__(self, model: Any, inputs: Any, target: Any = None, **kwargs: Any) -> Any:
        return self.explainer(self.view(model), inputs, target, **kwargs)

    def __repr__(self) -> str:
        return f"AdaptedExplainer({self.explainer!r}, output={self.output!r})"
