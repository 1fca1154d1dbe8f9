"""Pipeline tables as frozen attrs records: the one source of truth of the file format.

Every table of a pipeline file is read into a frozen attrs record declared by the step that
reads it (``PipelineStepSpec.schema``). A record is the whole description of its table:

* the field's **type** comes from its annotation (``str``, ``int``, ``float``, ``bool``,
  ``X | None``, ``tuple[X, ...]`` for lists, ``Mapping[str, X]`` for tables, another record for a
  sub-table, ``Any`` for plain data);
* its **default** is the attrs default (a field without one is required);
* its **validators** check the value (the same checks run when the record is built in Python);
* its **metadata** documents it: ``doc`` (required), and optionally ``type`` and ``default``
  (the texts the reference shows when the annotation or default do not say it well).

:func:`read_record` turns a parsed TOML table into such a record, raising
:class:`PipelineError` that names the file, ``[table].field``, what was expected and what came,
and :class:`PipelineNameError` (with the closest names) for an unknown field. The reference
``docs/pipeline-reference.md`` is generated from the same records
(:mod:`wrapgrad_pipeline.reference`). Nothing in a file can execute code: values are plain data.

Example::

    @attrs.frozen(kw_only=True)
    class TrainTable:
        \"\"\"``[train]``: robust training of the model.\"\"\"
        epochs: int = setting(3, doc="training epochs", validator=checked(check_positive_int))
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any, Union

import attrs

from wrapgrad.errors import UnknownNameError, WrapgradValueError

__all__ = [
    "PipelineError",
    "PipelineNameError",
    "check_output_path",
    "checked",
    "describe",
    "field_docs",
    "normal_parts",
    "read_named",
    "read_record",
    "setting",
    "type_text",
]


class PipelineError(WrapgradValueError):
    """A pipeline file is invalid. ``file`` and ``field`` say where (``"[explain].methods[1]"``)."""

    def __init__(self, file: str, field: str | None = None, message: str | None = None) -> None:
        if field is None:  # a subclass passing its finished message along the MRO
            super().__init__(file)
            return
        self.file = file
        self.field = field
        super().__init__(f"{file}: {field}: {message}")

    @classmethod
    def of(cls, file: str, field: str, exc: BaseException) -> PipelineError:
        """The error ``exc`` raised by a check called with ``argument=field`` (its message starts
        with the field), placed in ``file``."""
        text = str(exc)
        prefix = f"{field}: "
        return cls(file, field, text[len(prefix) :] if text.startswith(prefix) else text)


class PipelineNameError(UnknownNameError, PipelineError):
    """A pipeline file names a plugin component (or field) that does not exist."""

    def __init__(self, file: str, field: str, name: str, known: Any, what: str) -> None:
        self.file = file
        self.field = field
        UnknownNameError.__init__(self, f"{file}: {field}", name, known, what=what)


# -- declaring fields ---------------------------------------------------------------------------
def setting(
    default: Any = attrs.NOTHING,
    *,
    doc: str,
    type: str | None = None,
    default_doc: str | None = None,
    validator: Any = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """An attrs field of a table record with its documentation (``metadata``).

    Args:
        default: the default; omitted: the field is required.
        doc: what the field means (the reference's last column).
        type: the type as the reference shows it, when the annotation does not say enough
            (``"integer ≥ 1"``).
        default_doc: the default as the reference shows it (``"[pipeline].seed"``).
        validator: attrs validator(s) checking the value.
        factory: a default factory (for mutable defaults) instead of ``default``.
    """
    metadata = {"doc": doc}
    if type is not None:
        metadata["type"] = type
    if default_doc is not None:
        metadata["default"] = default_doc
    if factory is not None:
        return attrs.field(factory=factory, validator=validator, metadata=metadata)
    return attrs.field(default=default, validator=validator, metadata=metadata)


def checked(check: Callable[..., Any], *args: Any, optional: bool = False, **kwargs: Any) -> Any:
    """An attrs validator from a :mod:`wrapgrad.checks` function ``check(value, argument, ...)``
    (``optional``: None passes)."""

    def validate(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is None and optional:
            return
        check(value, attribute.name, *args, **kwargs)

    validate.__name__ = f"checked_{check.__name__}"
    return validate


# -- types ----------------------------------------------------------------------------------------
_SCALARS = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
_SCALAR_DOCS = {str: "string", int: "integer", float: "number", bool: "boolean"}


@functools.cache
def _fields(cls: type) -> tuple[attrs.Attribute, ...]:
    return attrs.fields(attrs.resolve_types(cls))


def _optional(tp: Any) -> Any:
    """``X`` for ``X | None`` (None cannot come from a file); any other annotation as it is."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        rest = tuple(a for a in typing.get_args(tp) if a is not type(None))
        if len(rest) == 1:
            return rest[0]
    return tp


def _unwrap(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    """``(origin, args)`` of an annotation (``X | None`` read as ``X``)."""
    tp = _optional(tp)
    return typing.get_origin(tp), typing.get_args(tp)


def _is_list(origin: Any) -> bool:
    return origin in (tuple, list)


def _is_table(origin: Any) -> bool:
    return origin in (dict, Mapping, typing.Mapping)


def type_text(tp: Any, *, doc: bool = False) -> str:
    """How a field's type reads: in errors (``"an integer"``) or, with ``doc``, in the reference
    (``"integer"``, ``"list of strings"``, ``"table of tables"``)."""
    tp = _optional(tp)
    origin, args = _unwrap(tp)
    if tp in _SCALARS:
        return (_SCALAR_DOCS if doc else _SCALARS)[tp]
    if _is_list(origin):
        item = type_text(args[0], doc=True)
        text = f"list of {item if item == 'value' else item + 's'}"
        return text if doc else f"a {text}"
    if _is_table(origin):
        inner = args[1] if len(args) == 2 else Any
        inner_origin, _ = _unwrap(inner)
        text = "table of tables" if _is_table(inner_origin) or attrs.has(inner) else "table"
        return text if doc else f"a {text}"
    if isinstance(tp, type) and attrs.has(tp):
        return "table" if doc else "a table"
    return "value" if doc else "a value"


def describe(value: Any) -> str:
    """A parsed TOML value as an error message shows it (``"a string 'many'"``)."""
    kind = {
        dict: "a table",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)
    return kind if isinstance(value, (dict, list)) else f"{kind} {value!r}"


class _Reader:
    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, field: str, message: str) -> PipelineError:
        return PipelineError(self.file, field, message)

    def value(self, tp: Any, value: Any, where: str) -> Any:
        """``value`` as the annotation ``tp`` wants it (lists become tuples, integers given for
        numbers become floats, sub-tables become records), or an error naming ``where``."""
        tp = _optional(tp)
        origin, args = _unwrap(tp)
        if tp is Any or tp is object:
            return self.plain(value, where)
        if tp in _SCALARS:
            if tp is float and isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, tp) and (tp is bool or not isinstance(value, bool)):
                return value
            raise self.fail(where, f"expected {_SCALARS[tp]}, got {describe(value)}")
        if isinstance(tp, type) and attrs.has(tp):
            return self.record(tp, value, where)
        if _is_list(origin):
            if not isinstance(value, (list, tuple)):
                raise self.fail(where, f"expected {type_text(tp)}, got {describe(value)}")
            return tuple(self.value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if _is_table(origin):
            if not isinstance(value, dict):
                raise self.fail(where, f"expected {type_text(tp)}, got {describe(value)}")
            inner = args[1] if len(args) == 2 else Any
            return {k: self.value(inner, v, f"{where}.{k}") for k, v in value.items()}
        return self.plain(value, where)

    def plain(self, value: Any, where: str) -> Any:
        """Plain data only (what TOML can hold); guards tables built in Python against objects."""
        if isinstance(value, dict):
            return {k: self.plain(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, (str, int, float, bool)):
            return value
        raise self.fail(
            where, f"expected a string, number, boolean, list or table, got {type(value).__name__}"
        )

    def record(self, cls: type, raw: Any, where: str) -> Any:
        if not isinstance(raw, dict):
            raise self.fail(where, f"expected a table, got {describe(raw)}")
        fields = {f.name: f for f in _fields(cls)}
        for key in raw:
            if key not in fields:
                raise PipelineNameError(self.file, f"{where}.{key}", key, fields, "field")
        values = {}
        for name, f in fields.items():
            path = f"{where}.{name}"
            if name not in raw:
                if f.default is attrs.NOTHING:
                    raise self.fail(path, f"missing; expected {type_text(f.type)}")
                continue
            value = self.value(f.type, raw[name], path)
            if f.validator is not None:
                try:
                    f.validator(None, f.evolve(name=path), value)
                except PipelineError:
                    raise
                except (ValueError, TypeError) as exc:
                    raise PipelineError.of(self.file, path, exc) from None
            values[name] = value
        return cls(**values)


def read_record(cls: type, raw: Any, where: str, file: str) -> Any:
    """Read the parsed table ``raw`` (the table ``where``, e.g. ``"[data]"``) into the record
    class ``cls``; errors name ``file`` and the field."""
    return _Reader(file).record(cls, raw, where)


def read_named(cls: type, raw: Any, table: str, file: str) -> dict[str, Any]:
    """Read ``[table.<name>]`` tables (``raw`` is the ``[table]`` table) into records by name."""
    reader = _Reader(file)
    if not isinstance(raw, dict):
        raise reader.fail(f"[{table}]", f"expected a table, got {describe(raw)}")
    return {k: reader.record(cls, v, f"[{table}.{k}]") for k, v in raw.items()}


# -- documentation --------------------------------------------------------------------------------
def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return repr(value)


def field_docs(cls: type) -> list[dict[str, str]]:
    """One row per field of a table record: ``name``, ``type``, ``default``, ``doc``, and
    ``table`` (the record class of a sub-table or list of sub-tables, else None)."""
    rows = []
    for f in _fields(cls):
        default = f.metadata.get("default")
        if default is None:
            if f.default is attrs.NOTHING:
                default = "required"
            else:
                value = f.default.factory() if isinstance(f.default, attrs.Factory) else f.default  # type: ignore[union-attr]
                default = "none" if value is None else f"`{_toml(value)}`"
        origin, args = _unwrap(f.type)
        sub = args[0] if _is_list(origin) and args else _optional(f.type)
        rows.append(
            {
                "name": f.name,
                "type": f.metadata.get("type") or type_text(f.type, doc=True),
                "default": default,
                "doc": f.metadata.get("doc", ""),
                "table": sub if isinstance(sub, type) and attrs.has(sub) else None,
            }
        )
    return rows


# -- output paths ---------------------------------------------------------------------------------
def normal_parts(value: str) -> tuple[str, ...]:
    """The parts of a relative path with ``.`` and ``..`` resolved; ``..`` above the start is
    kept as ``".."`` (the path leaves its root)."""
    parts: list[str] = []
    for part in value.replace("\\", "/").split("/"):
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            else:
                parts.append("..")
        elif part not in ("", "."):
            parts.append(part)
    return tuple(parts)


def check_output_path(value: str, file: str = "<pipeline>", field: str = "path") -> str:
    """``value`` as a relative path that stays inside the output directory, else an error."""
    if not isinstance(value, str) or not value.strip():
        raise PipelineError(file, field, f"expected a relative path (a string), got {value!r}")
    posix, windows = PurePosixPath(value), PureWindowsPath(value)
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        raise PipelineError(
            file,
            field,
            f"expected a path inside the output directory, got the absolute path {value!r}",
        )
    parts = normal_parts(value)
    if ".." in parts:
        raise PipelineError(
            file,
            field,
            f"expected a path inside the output directory, got {value!r}, which leaves it",
        )
    if not parts:
        raise PipelineError(file, field, f"expected a file or folder name, got {value!r}")
    return value
