"""Option names and routing: the one place wrapgrad reads a signature.

``wrap(model, method, enhancer, **options)`` sends each option to the part that takes it: the
enhancer's factory, the method's constructor, or the method's ``attribute`` call. Which names a
part takes comes from :func:`accepted` (a callable's keyword parameters) or from a spec's declared
``options`` (:meth:`wrapgrad.records.Spec.option_names`). :func:`route` then splits the options:

* an option exactly one part takes goes to it;
* an option several parts take is an :class:`OptionCollisionError` naming all of them (unless it
  was given to one part explicitly: ``wrap(..., method_options={...}, enhancer_options={...})``);
* an option no part takes is an :class:`~wrapgrad.errors.UnknownNameError` with the closest names.

>>> def enhancer(n_samples=10, seed=None): ...
>>> def method(n_samples=5, stdevs=0.0): ...
>>> parts = [Part.of("enhancer", enhancer), Part.of("method", method)]
>>> route({"seed": 0, "stdevs": 0.1}, parts)
{'enhancer': {'seed': 0}, 'method': {'stdevs': 0.1}}
>>> route({"n_samples": 3}, parts)  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
...
wrapgrad.options.OptionCollisionError: n_samples: ...
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from wrapgrad.errors import UnknownNameError, WrapgradValueError

__all__ = ["OptionCollisionError", "Part", "accepted", "capped", "check_options", "route"]


@functools.lru_cache(maxsize=1024)
def _accepted_cached(fn: Callable[..., Any]) -> tuple[frozenset[str], bool]:
    return _read(fn)


def _read(fn: Callable[..., Any]) -> tuple[frozenset[str], bool]:
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):  # a builtin without a signature: cannot tell, take anything
        return frozenset(), True
    names = {
        n
        for n, p in params.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"
    }
    return frozenset(names), any(p.kind == p.VAR_KEYWORD for p in params.values())


def accepted(fn: Callable[..., Any]) -> tuple[frozenset[str], bool]:
    """``(names, open)``: the keyword parameters ``fn`` takes (for a class: its ``__init__``'s),
    and whether it also takes ``**kwargs``."""
    try:
        return _accepted_cached(fn)
    except TypeError:  # unhashable callable
        return _read(fn)


class OptionCollisionError(WrapgradValueError):
    """An option that several parts of a call take, given without saying which one.

    Attributes:
        option: the option's name.
        parts: the parts that take it.
    """

    def __init__(self, option: str, parts: Iterable[str], hint: str = "") -> None:
        self.option = option
        self.parts = tuple(parts)
        names = " and ".join(self.parts)
        super().__init__(
            f"{option}: both {names} take this option; say which one gets it"
            + (f" ({hint})" if hint else "")
        )


class Part:
    """One receiver of options: a label for messages, the names it takes, and whether it takes
    any other name (``**kwargs``) as a last resort."""

    __slots__ = ("label", "names", "open")

    def __init__(self, label: str, names: Iterable[str], open: bool = False) -> None:
        self.label = label
        self.names = frozenset(names)
        self.open = open

    @classmethod
    def of(cls, label: str, fn: Callable[..., Any], exclude: Iterable[str] = ()) -> Part:
        names, open_ = accepted(fn)
        return cls(label, names - set(exclude), open_)


def route(
    options: Mapping[str, Any],
    parts: Iterable[Part],
    *,
    explicit: Mapping[str, Mapping[str, Any]] | None = None,
    argument: str = "options",
    extra_known: Iterable[str] = (),
    hint: str = "",
) -> dict[str, dict[str, Any]]:
    """Split ``options`` over ``parts`` by the names each takes.

    Args:
        options: the options given without a receiver.
        parts: the receivers, in priority order for ``**kwargs`` catch-alls only (a named
            parameter always beats a catch-all; two named parameters collide).
        explicit: options already addressed to a part, by label; they are passed through and
            an option given both ways is an error.
        argument: the argument name unknown options are reported under.
        extra_known: names that are valid elsewhere (listed in suggestions).
        hint: how to resolve a collision (shown in the error).

    Returns:
        label -> options for every part (possibly empty).
    """
    parts = list(parts)
    out: dict[str, dict[str, Any]] = {p.label: {} for p in parts}
    for label, given in (explicit or {}).items():
        out.setdefault(label, {}).update(given)
    for key, value in options.items():
        for label, given in (explicit or {}).items():
            if key in given:
                raise WrapgradValueError(
                    f"{key}: given both as an option and in the options for {label}; give it once"
                )
        takers = [p for p in parts if key in p.names]
        if len(takers) > 1:
            raise OptionCollisionError(key, [p.label for p in takers], hint)
        if not takers:
            takers = [p for p in parts if p.open][:1]
        if not takers:
            known = set(extra_known).union(*(p.names for p in parts))
            raise UnknownNameError(argument, key, known, what="option")
        out[takers[0].label][key] = value
    return out


def check_options(
    options: Mapping[str, Any], fn: Callable[..., Any], *, what: str, argument: str = "options"
) -> None:
    """Refuse option names ``fn`` does not take (unless it takes ``**kwargs``), with the closest
    known names: the check :func:`wrapgrad.metric`, :func:`wrapgrad.attack` and pipeline files
    make before building a component."""
    names, open_ = accepted(fn)
    if open_:
        return
    for key in options:
        if key not in names:
            raise UnknownNameError(argument, key, names, what=f"option of {what}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def capped(
    options: Mapping[str, Any], caps: Mapping[str, Any], *, shared: Iterable[str] = ()
) -> dict[str, Any]:
    """``options`` with a component's smoke ``caps`` (:attr:`wrapgrad.records.Spec.smoke`)
    applied: a number given above its cap is lowered to it, and an option not given is set to
    its cap (so defaults shrink too), except the names in ``shared``, which another part of the
    same call also takes (setting them here would hand them to the wrong part).

    >>> capped({"n_samples": 50, "seed": 1}, {"n_samples": 2, "steps": 3})
    {'n_samples': 2, 'seed': 1, 'steps': 3}
    """
    out = dict(options)
    shared = set(shared)
    for key, cap in caps.items():
        if key in out:
            if _number(out[key]) and _number(cap):
                out[key] = min(out[key], cap)
        elif key not in shared:
            out[key] = cap
    return out
