"""The check record, the table of checks, and the assertions checks share."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor, nn

from wrapgrad.engine.rng import changed_global_rngs, global_rng_states
from wrapgrad.guard import ModelSnapshot
from wrapgrad.testing.components import Component
from wrapgrad.testing.probes import ProbeError, ProbeModel

__all__ = [
    "CHECKS",
    "Check",
    "check",
    "close",
    "fail",
    "identical",
    "model_unchanged",
    "require",
    "rng_untouched",
    "unchanged_when_raising",
    "untouched",
]


@attrs.frozen
class Check:
    """One conformance check: a named function ``(component) -> None`` that raises an
    ``AssertionError`` when the component breaks the contract the check names."""

    name: str
    """``check_<what>``: the id part pytest shows and ``-k`` selects."""
    kinds: tuple[str, ...]
    """The component kinds it applies to."""
    function: Callable[[Component], None] = attrs.field(repr=False)
    applies: Callable[[Component], bool] = attrs.field(repr=False, default=lambda c: True)
    """Whether the component promises what the check tests (e.g. only explainers whose traits
    say ``differentiable``)."""

    @property
    def doc(self) -> str:
        """The first paragraph of the check function's docstring: the promise it tests."""
        text = (self.function.__doc__ or "").strip().split("\n\n")[0]
        return " ".join(text.split())

    def __call__(self, component: Component) -> None:
        """Run the check; an ``AssertionError`` naming check and component if it fails."""
        try:
            self.function(component)
        except AssertionError as exc:
            raise AssertionError(f"{self.name} failed for {component.key}: {exc}") from exc
        except Exception as exc:
            raise AssertionError(
                f"{self.name} failed for {component.key}: {type(exc).__name__}: {exc}"
            ) from exc

    def __repr__(self) -> str:
        # pytest shows this in ids and in the failure header.
        return self.name


#: Every check, in the order they run.
CHECKS: list[Check] = []


def check(
    *kinds: str, applies: Callable[[Component], bool] | None = None
) -> Callable[[Callable[[Component], None]], Callable[[Component], None]]:
    """Register ``function`` as the check ``function.__name__`` for components of ``kinds``."""

    def register(function: Callable[[Component], None]) -> Callable[[Component], None]:
        if any(c.name == function.__name__ for c in CHECKS):
            raise ValueError(f"check {function.__name__!r} is registered twice")
        CHECKS.append(Check(function.__name__, kinds, function, applies or (lambda c: True)))
        return function

    return register


# -- assertions ---------------------------------------------------------------------------------
def fail(message: str) -> None:
    """Raise the ``AssertionError`` a check fails with."""
    raise AssertionError(message)


def require(condition: Any, message: str) -> None:
    """``fail(message)`` unless ``condition`` (never a bare ``assert``: ``-O`` strips those)."""
    if not condition:
        fail(message)


def _flat(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _flat(v)]
    fail(f"expected a tensor or a tuple of tensors, got {type(value).__name__}")
    return []


def identical(a: Any, b: Any, what: str) -> None:
    """Bitwise equal tensors (or tuples of them): same shape, dtype, device and values."""
    xs, ys = _flat(a), _flat(b)
    require(len(xs) == len(ys), f"{what}: {len(xs)} tensors against {len(ys)}")
    for x, y in zip(xs, ys, strict=True):
        require(
            x.shape == y.shape and x.dtype == y.dtype and x.device == y.device,
            f"{what}: {tuple(x.shape)} {x.dtype} on {x.device} against "
            f"{tuple(y.shape)} {y.dtype} on {y.device}",
        )
        require(torch.equal(x.detach(), y.detach()), f"{what}: the values differ")


def close(a: Any, b: Any, what: str, *, rtol: float = 1e-4, atol: float = 1e-6) -> None:
    """Equal up to float rounding (``torch.testing.assert_close`` with the given tolerances)."""
    xs, ys = _flat(a), _flat(b)
    require(len(xs) == len(ys), f"{what}: {len(xs)} tensors against {len(ys)}")
    for x, y in zip(xs, ys, strict=True):
        try:
            torch.testing.assert_close(x.detach(), y.detach(), rtol=rtol, atol=atol)
        except AssertionError as exc:
            fail(f"{what}: {' '.join(str(exc).split())}")


@contextlib.contextmanager
def model_unchanged(model: nn.Module, what: str = "the call") -> Iterator[None]:
    """Fail if ``model`` differs after the block (parameters and buffers bitwise, ``.grad``,
    ``requires_grad``, ``training`` flags, hooks, grad mode: :class:`~wrapgrad.guard.ModelSnapshot`);
    the model is restored before the failure is raised."""
    snapshot = ModelSnapshot(model)
    try:
        yield
    finally:
        changes = snapshot.differences()
        if changes:
            snapshot.restore()
            fail(f"{what} changed the model: " + "; ".join(changes[:6]))


@contextlib.contextmanager
def rng_untouched(what: str = "the call") -> Iterator[None]:
    """Fail if a global random state (torch's CPU generator, NumPy's, Python's) differs after
    the block; it is restored first."""
    states = global_rng_states()
    try:
        yield
    finally:
        changed = changed_global_rngs(states)
        torch.random.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
        if changed:
            fail(
                f"{what} changed {' and '.join(changed)} global random state (draw from a "
                "seeded generator of your own, or restore the state)"
            )


@contextlib.contextmanager
def untouched(model: nn.Module, what: str = "the call") -> Iterator[None]:
    """:func:`model_unchanged` and :func:`rng_untouched` together: fail if the block changed
    ``model`` or a global random state (the promise every component makes about a call)."""
    with model_unchanged(model, what), rng_untouched(what):
        yield


def _caused_by_probe(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, ProbeError) or "probe model told to fail" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def unchanged_when_raising(model: ProbeModel, call: Callable[[], Any], what: str) -> None:
    """Run ``call`` once to count its forward calls, then again with the model raising from the
    middle one on: the error must come out (not be swallowed) and the model must be exactly as
    before (hooks a method registered removed, flags and gradients restored)."""
    model.calls = 0
    call()
    made = model.calls
    require(made > 0, f"{what} never ran the model")
    with model.failing(at=made // 2 + 1), model_unchanged(model, f"{what}, raising half-way,"):
        try:
            call()
        except Exception as exc:
            require(
                _caused_by_probe(exc),
                f"{what} raised {type(exc).__name__}: {exc} instead of the model's error",
            )
        else:
            fail(f"{what} returned although the model raised (the error was swallowed)")
