"""The plugin registry: loads entry points lazily, collects specs, resolves names.

The registry is built the first time a component is looked up (never at ``import wrapgrad``)
and cached; :func:`get_registry` returns it. Tests and embedding applications build their own
:class:`Registry` and install it with :func:`use_registry`.

Loading rules:

* Every entry point of the group ``wrapgrad`` is a plugin module; wrapgrad's own built-ins are
  declared in its ``pyproject.toml`` the same way, so the core holds no list of built-ins.
* ``WRAPGRAD_DISABLE_PLUGIN_AUTOLOAD=1`` loads only the entry points of the ``wrapgrad``
  distribution itself.
* A plugin that fails to import, declares another major hook API version
  (:data:`~wrapgrad.hookspecs.HOOK_API`), has a hook the core does not know, or whose hook raises is
  reported (a :class:`~wrapgrad.errors.WrapgradWarning` naming entry point, distribution and
  error, and a ``broken`` row in :func:`wrapgrad.plugins`); the others still load.
  ``WRAPGRAD_STRICT_PLUGINS=1`` (or ``Registry(strict=True)``) re-raises instead.
* Two plugins yielding the same name for the same kind are refused with a
  :class:`~wrapgrad.errors.PluginConflictError` naming both.

A registry of the built-ins only, and a plugin registered in code:

>>> from wrapgrad.records import MetricSpec
>>> class MyPlugin:
...     @hookimpl
...     def wrapgrad_metrics(self):
...         yield MetricSpec(name="l1", factory=lambda: None, summary="L1 distance")
>>> registry = Registry(autoload=False)
>>> registry.register(MyPlugin(), "mine")
>>> registry.provider("metric", "l1"), "smoothgrad" in registry.names("enhancer")
('mine', True)
>>> registry.get("metric", "L-1").name  # case and separators do not matter
'l1'
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.metadata as md
import os
import threading
import traceback
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import attrs
import pluggy

from wrapgrad import hookspecs
from wrapgrad.errors import (
    PluginConflictError,
    PluginLoadError,
    UnavailableError,
    UnknownNameError,
    WrapgradWarning,
)
from wrapgrad.records import KINDS, PluginInfo, Spec, normalize_name

__all__ = [
    "ENTRY_POINT_GROUP",
    "BrokenPlugin",
    "Registry",
    "get_registry",
    "hookimpl",
    "reset_default_registry",
    "use_registry",
]

ENTRY_POINT_GROUP = "wrapgrad"
DISTRIBUTION = "wrapgrad"
DISABLE_ENV = "WRAPGRAD_DISABLE_PLUGIN_AUTOLOAD"
STRICT_ENV = "WRAPGRAD_STRICT_PLUGINS"

#: Marks a plugin's hook implementations: ``@wrapgrad.hookimpl``.
hookimpl = pluggy.HookimplMarker(hookspecs.PROJECT_NAME)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _canon(dist: str | None) -> str | None:
    return None if dist is None else dist.lower().replace("_", "-").replace(".", "-")


@attrs.frozen
class BrokenPlugin:
    """A plugin that could not be used, and why."""

    plugin: str
    distribution: str | None
    version: str | None
    error: str
    traceback: str = ""


@attrs.frozen
class _Provided:
    spec: Spec
    plugin: str


class Registry:
    """Collects the components that plugins provide.

    Args:
        autoload: load third-party entry points; default: unless ``WRAPGRAD_DISABLE_PLUGIN_AUTOLOAD``
            is set. The ``wrapgrad`` distribution's own entry points always load.
        strict: re-raise plugin errors instead of reporting them; default from
            ``WRAPGRAD_STRICT_PLUGINS``.
        entry_points: the entry points to consider (default: the installed ones of the group
            ``wrapgrad``); tests pass their own.
        builtins_only_distribution: the distribution whose entry points count as built-ins.
    """

    def __init__(
        self,
        *,
        autoload: bool | None = None,
        strict: bool | None = None,
        entry_points: Iterable[md.EntryPoint] | None = None,
        builtins_only_distribution: str = DISTRIBUTION,
    ) -> None:
        self.autoload = (not _env_flag(DISABLE_ENV)) if autoload is None else autoload
        self.strict = _env_flag(STRICT_ENV) if strict is None else strict
        self._entry_points = None if entry_points is None else list(entry_points)
        self._builtin_dist = _canon(builtins_only_distribution)
        self._pm: pluggy.PluginManager | None = None
        self._broken: list[BrokenPlugin] = []
        self._origin: dict[str, tuple[str | None, str | None]] = {}
        self._pending: list[tuple[Any, str, str | None, str | None]] = []
        self._cache: dict[str, dict[str, _Provided]] = {}
        #: Names plugins know but do not offer (``Spec.unavailable``), by kind.
        self._unavailable: dict[str, dict[str, _Provided]] = {}
        self._lock = threading.RLock()

    # -- loading ----------------------------------------------------------------------------
    @property
    def manager(self) -> pluggy.PluginManager:
        """The pluggy plugin manager, built (and entry points loaded) on first access."""
        with self._lock:
            if self._pm is None:
                pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
                pm.add_hookspecs(hookspecs)
                self._pm = pm
                self._load_entry_points()
                for plugin, name, dist, version in self._pending:
                    self._register(plugin, name, dist, version)
                self._pending.clear()
            return self._pm

    def _load_entry_points(self) -> None:
        eps = (
            self._entry_points
            if self._entry_points is not None
            else list(md.entry_points(group=ENTRY_POINT_GROUP))
        )
        for ep in sorted(eps, key=lambda e: (self._dist_of(e)[0] != self._builtin_dist, e.name)):
            dist, version = self._dist_of(ep)
            if not self.autoload and _canon(dist) != self._builtin_dist:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                self._report(ep.name, dist, version, f"error importing {ep.value!r}: {exc!r}", exc)
                continue
            self._register(plugin, ep.name, dist, version)

    @staticmethod
    def _dist_of(ep: md.EntryPoint) -> tuple[str | None, str | None]:
        dist = getattr(ep, "dist", None)
        if dist is None:
            return None, None
        try:
            return dist.metadata["Name"], dist.version
        except Exception:  # a dist-info without metadata
            return None, None

    def _register(self, plugin: Any, name: str, dist: str | None, version: str | None) -> None:
        assert self._pm is not None
        problem = hookspecs.hook_api_problem(plugin)
        if problem is not None:
            self._report(name, dist, version, problem)
            return
        unknown = [
            attr
            for attr in dir(plugin)
            if attr.startswith("wrapgrad_")
            and callable(getattr(plugin, attr, None))
            and hasattr(getattr(plugin, attr), f"{hookspecs.PROJECT_NAME}_impl")
            and not hasattr(self._pm.hook, attr)
        ]
        if unknown:
            self._report(
                name, dist, version, f"unknown hook(s) {', '.join(unknown)}; see wrapgrad.hookspecs"
            )
            return
        existing = self._pm.get_plugin(name)
        if existing is not None:
            other = self._origin.get(name, (None, None))[0]
            self._report(
                name,
                dist,
                version,
                f"plugin name {name!r} is already taken by distribution {other!r}",
            )
            return
        try:
            self._pm.register(plugin, name=name)
        except Exception as exc:  # pluggy.PluginValidationError: bad hook signature
            self._report(name, dist, version, f"invalid plugin: {exc}", exc)
            return
        self._origin[name] = (dist, version)
        self._cache.clear()

    def _report(
        self,
        plugin: str,
        dist: str | None,
        version: str | None,
        error: str,
        exc: BaseException | None = None,
    ) -> None:
        tb = "".join(traceback.format_exception(exc)) if exc is not None else ""
        self._broken.append(BrokenPlugin(plugin, dist, version, error, tb))
        where = f" from distribution {dist!r}" if dist else ""
        msg = f"wrapgrad plugin {plugin!r}{where} is broken and was skipped: {error}"
        if self.strict:
            raise PluginLoadError(msg) from exc
        warnings.warn(msg, WrapgradWarning, stacklevel=3)

    def register(
        self,
        plugin: Any,
        name: str | None = None,
        *,
        distribution: str | None = None,
        version: str | None = None,
    ) -> None:
        """Register a plugin object (a module or any object with hook implementations) in code."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        with self._lock:
            if self._pm is None:
                self._pending.append((plugin, name, distribution, version))
            else:
                self._register(plugin, name, distribution, version)

    def unregister(self, name: str) -> None:
        """Remove a plugin by name."""
        with self._lock:
            self.manager.unregister(name=name)
            self._origin.pop(name, None)
            self._cache.clear()

    def plugin(self, name: str) -> Any:
        """The loaded plugin object (for an entry point: its module) registered as ``name``.

        This is how one part of wrapgrad reaches a plugin's module without importing it (the
        import contracts forbid that), e.g. the deprecated ``wrapgrad.Pipeline`` alias."""
        found = self.manager.get_plugin(name)
        if found is None:
            names = [n for n, _ in self.manager.list_name_plugin()]
            raise UnknownNameError("plugin", name, names, what="plugin")
        return found

    @property
    def broken(self) -> list[BrokenPlugin]:
        """Plugins that could not be used (loading happens on first access)."""
        self.manager  # noqa: B018 - load
        return list(self._broken)

    # -- collecting ---------------------------------------------------------------------------
    def _collect(self, kind: str) -> dict[str, _Provided]:
        if kind not in KINDS:
            raise UnknownNameError("kind", kind, KINDS, what="component kind")
        with self._lock:
            pm = self.manager
            if kind in self._cache:
                return self._cache[kind]
            spec_cls, hook_name = KINDS[kind]
            found: dict[str, _Provided] = {}
            withdrawn: dict[str, _Provided] = {}
            conflicts: dict[str, list[str]] = {}
            for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):
                try:
                    result = impl.function()
                    specs = [] if result is None else list(result)
                    for spec in specs:
                        if not isinstance(spec, spec_cls):
                            raise TypeError(
                                f"{hook_name} must yield {spec_cls.__name__} records, "
                                f"got {type(spec).__name__}"
                            )
                except Exception as exc:
                    dist, version = self._origin.get(impl.plugin_name, (None, None))
                    self._report(
                        impl.plugin_name, dist, version, f"hook {hook_name} raised {exc!r}", exc
                    )
                    continue
                for spec in specs:
                    if spec.unavailable:
                        withdrawn.setdefault(spec.name, _Provided(spec, impl.plugin_name))
                        continue
                    if spec.name in found:
                        conflicts.setdefault(spec.name, [found[spec.name].plugin]).append(
                            impl.plugin_name
                        )
                        continue
                    found[spec.name] = _Provided(spec, impl.plugin_name)
            if conflicts:
                lines = [
                    f"{kind} {name!r} is provided by "
                    + " and ".join(f"{p!r} ({self._describe(p)})" for p in plugins)
                    for name, plugins in sorted(conflicts.items())
                ]
                raise PluginConflictError(
                    "; ".join(lines) + ". Uninstall one, or disable one with "
                    "Registry.unregister(name)."
                )
            self._cache[kind] = found
            # A name another plugin does offer is simply offered.
            self._unavailable[kind] = {n: p for n, p in withdrawn.items() if n not in found}
            return found

    def _describe(self, plugin: str) -> str:
        dist, version = self._origin.get(plugin, (None, None))
        return f"distribution {dist} {version}" if dist else "registered in code"

    def specs(self, kind: str) -> dict[str, Spec]:
        """All specs of one kind, by name."""
        return {name: p.spec for name, p in sorted(self._collect(kind).items())}

    def names(self, kind: str) -> list[str]:
        """The names of one kind, sorted."""
        return sorted(self._collect(kind))

    def get(self, kind: str, name: str, *, argument: str | None = None) -> Spec:
        """The spec of ``kind`` called ``name``; an :class:`UnavailableError` with the reason
        for a name a plugin declares unavailable (``Spec.unavailable``), an
        :class:`UnknownNameError` with the closest names otherwise."""
        found = self._collect(kind)
        try:
            key = normalize_name(name)
        except TypeError:
            key = None
        if key is not None and key not in found:
            # "DeepLift", "deeplift" and "deep-lift" all mean "deep_lift" when that is unambiguous.
            squashed = [k for k in found if k.replace("_", "") == key.replace("_", "")]
            if len(squashed) == 1:
                key = squashed[0]
        if key is None or key not in found:
            squash = (key or "").replace("_", "")
            withdrawn = next(
                (p for n, p in self._unavailable[kind].items() if n.replace("_", "") == squash),
                None,
            )
            if withdrawn is not None:
                raise UnavailableError(
                    argument or kind, kind, withdrawn.spec.name, withdrawn.spec.unavailable
                )
            raise UnknownNameError(argument or kind, str(name), found, what=kind)
        return found[key].spec

    def provider(self, kind: str, name: str) -> str:
        """The plugin that provides a component."""
        return self._collect(kind)[normalize_name(name)].plugin

    def plugins(self) -> list[PluginInfo]:
        """Every component of every kind with its provider, then the broken plugins."""
        rows: list[PluginInfo] = []
        for kind in KINDS:
            for name, provided in sorted(self._collect(kind).items()):
                dist, version = self._origin.get(provided.plugin, (None, None))
                rows.append(
                    PluginInfo(
                        name=name,
                        kind=kind,
                        plugin=provided.plugin,
                        distribution=dist,
                        version=version,
                        summary=provided.spec.summary,
                    )
                )
        for b in self._broken:
            rows.append(
                PluginInfo(
                    name=b.plugin,
                    kind="broken",
                    plugin=b.plugin,
                    distribution=b.distribution,
                    version=b.version,
                    error=b.error,
                )
            )
        return rows


_default: Registry | None = None
_default_lock = threading.Lock()
#: The registry installed for the current context by :func:`use_registry` (None: the default).
_current: contextvars.ContextVar[Registry | None] = contextvars.ContextVar(
    "wrapgrad_registry", default=None
)


def get_registry() -> Registry:
    """The current registry: the one :func:`use_registry` installed for this context (thread or
    task), else the process-wide default, built on first use.

    Every lookup in wrapgrad goes through this function (``registry=`` arguments install their
    registry with :func:`use_registry` for the call), so one registry is honoured by every path:
    explainers, enhancers, calibration, data sets, models, metrics and pipelines.
    """
    current = _current.get()
    if current is not None:
        return current
    global _default
    with _default_lock:
        if _default is None:
            _default = Registry()
        return _default


@contextlib.contextmanager
def use_registry(registry: Registry | None) -> Iterator[Registry]:
    """Make ``registry`` the current one for the block (this thread or task only); ``None``
    keeps the current one, so ``with use_registry(registry_argument):`` is the idiom for
    functions that take ``registry=``."""
    if registry is None:
        yield get_registry()
        return
    if not isinstance(registry, Registry):
        from wrapgrad.errors import WrapgradTypeError

        raise WrapgradTypeError(
            f"registry: expected a wrapgrad.Registry or None, got {type(registry).__name__}"
        )
    token = _current.set(registry)
    try:
        yield registry
    finally:
        _current.reset(token)


def reset_default_registry() -> None:
    """Forget the process-wide default registry, so the next lookup builds it afresh (after
    installing or uninstalling a plugin package in a running process)."""
    global _default
    with _default_lock:
        _default = None
