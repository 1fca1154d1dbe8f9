"""Exceptions raised by wrapgrad.

Every error the library raises on purpose derives from :class:`WrapgradError`, and also from the
built-in class that fits (``ValueError``, ``TypeError``, ``LookupError``), so callers may catch
either. Messages name the argument, what was expected and what came.

>>> err = UnknownNameError("enhancer", "smoothgard", ["smoothgrad", "noisegrad"], what="enhancer")
>>> str(err)
"enhancer: unknown enhancer 'smoothgard'; did you mean 'smoothgrad'?"
>>> isinstance(err, LookupError), isinstance(err, WrapgradError)
(True, True)
>>> closest("GradCam", ["layer_grad_cam", "saliency"])
['layer_grad_cam']
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = [
    "ModelMutatedError",
    "PluginConflictError",
    "PluginLoadError",
    "UnavailableError",
    "UnknownNameError",
    "WrapgradError",
    "WrapgradTypeError",
    "WrapgradValueError",
    "WrapgradWarning",
    "closest",
]


class WrapgradError(Exception):
    """Base class of every error wrapgrad raises on purpose.

    Every one pickles (worker processes and ranks send errors to their parent): it is rebuilt
    from its message and attributes, not by calling its constructor again, whose arguments
    (``UnknownNameError(argument, name, known)``, ...) differ from the message that Python's
    default pickling would pass it.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[WrapgradError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    """A pickled :class:`WrapgradError` again: its message (``args``) and attributes."""
    error = Exception.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class WrapgradValueError(WrapgradError, ValueError):
    """An argument has the right type but a wrong value (shape, range, NaN, device, ...)."""


class WrapgradTypeError(WrapgradError, TypeError):
    """An argument has the wrong type."""


class UnknownNameError(WrapgradValueError, LookupError):
    """A name (plugin, method, layer, option) is not known; the message lists the closest ones.

    Attributes:
        argument: the argument that carried the name.
        name: the name that was asked for.
        suggestions: the closest known names, best first.
    """

    def __init__(self, argument: str, name: str, known: Iterable[str], what: str = "name"):
        known = sorted(set(known))
        self.known = known
        self.argument = argument
        self.name = name
        self.suggestions = closest(name, known)
        msg = f"{argument}: unknown {what} {name!r}"
        if self.suggestions:
            msg += "; did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?"
        elif known:
            shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
            msg += f"; known: {shown}"
        else:
            msg += "; none is installed"
        super().__init__(msg)


class UnavailableError(WrapgradValueError, LookupError):
    """A name a plugin knows but does not offer (``Spec.unavailable``): the message says why.

    >>> str(UnavailableError("name", "metric", "quantus_x", "it scores batches; use quantus_y"))
    "name: metric 'quantus_x' is not available: it scores batches; use quantus_y"

    Attributes:
        argument: the argument that carried the name.
        name: the name that was asked for.
        reason: why it is not offered, and what to use instead.
    """

    def __init__(self, argument: str, what: str, name: str, reason: str) -> None:
        self.argument = argument
        self.name = name
        self.reason = reason
        super().__init__(f"{argument}: {what} {name!r} is not available: {reason}")


class PluginConflictError(WrapgradError, RuntimeError):
    """Two plugins claim the same name for the same kind of component."""


class PluginLoadError(WrapgradError, ImportError):
    """A plugin failed to load (raised only in strict mode; otherwise it is reported)."""


class ModelMutatedError(WrapgradError, RuntimeError):
    """A call changed the model (it has been restored); raised by the guard in ``verify`` mode."""


class WrapgradWarning(UserWarning):
    """Warnings wrapgrad issues (broken plugins, a model restored after a mutating call)."""


def closest(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """The known names closest to ``name`` (case-insensitive, separators ignored), best first."""

    def norm(s: str) -> str:
        return s.lower().replace("-", "").replace("_", "").replace(" ", "")

    known = list(known)
    by_norm: dict[str, str] = {}
    for k in known:
        by_norm.setdefault(norm(k), k)
    hits = difflib.get_close_matches(norm(name), list(by_norm), n=n, cutoff=0.6)
    out = [by_norm[h] for h in hits]
    # Substring matches ("gradcam" -> "layer_grad_cam") help where edit distance does not.
    for k in known:
        if len(out) >= n:
            break
        if norm(name) and norm(name) in norm(k) and k not in out:
            out.append(k)
    return out
