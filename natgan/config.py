"""Typed, strict configuration: plain dicts (from TOML or ``--set``) validated into dataclasses.

Every recipe section and every model's hyper-parameters are dataclasses declared with :func:`option`.
:func:`build` checks a dict against one: unknown keys, wrong types and out-of-range values raise a
:class:`~natgan.errors.ConfigError` naming the source (file or ``--set``), the dotted key and the
expected type, because a silently ignored typo in a 2-week GAN run is the most expensive bug there is.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from natgan.errors import ConfigError


def option(default: Any = dataclasses.MISSING, *, min: float | None = None, max: float | None = None,
           help: str = "", default_factory: Any = dataclasses.MISSING, aliases: tuple[str, ...] = ()) -> Any:
    """A dataclass field with an optional numeric range, a one-line help text and old names still accepted."""
    meta = {"min": min, "max": max, "help": help, "aliases": tuple(aliases)}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: typing.cast(Any, type(value))(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def type_name(tp: Any) -> str:
    """Human-readable name of a type annotation, as shown in error messages."""
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        inner = " | ".join(type_name(a) for a in args)
        return f"{inner} or none" if len(args) < len(get_args(tp)) else inner
    if origin is list:
        (arg,) = get_args(tp) or (Any,)
        return f"list of {type_name(arg)}"
    if origin is dict:
        return "table"
    if tp is Any:
        return "any value"
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    pass


def _coerce(value: Any, tp: Any) -> Any:
    """Return ``value`` converted to ``tp`` or raise _Mismatch. Ints widen to floats; nothing else converts."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in get_args(tp)):
            return value
        raise _Mismatch
    if origin in (Union, types.UnionType):
        if value is None and type(None) in get_args(tp):
            return None
        for arg in get_args(tp):
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        (arg,) = get_args(tp) or (Any,)
        return [_coerce(v, arg) for v in value]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        raise _Mismatch
    raise TypeError(f"unsupported annotation {tp!r}")


def _check_range(value: Any, f: dataclasses.Field, key: str, source: str, expected: str) -> None:
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    items = value if isinstance(value, list) else [value]
    flat = []
    for item in items:
        flat.extend(item if isinstance(item, list) else [item])
    for item in flat:
        if not isinstance(item, (int, float)) or isinstance(item, bool):
            continue
        if (lo is not None and item < lo) or (hi is not None and item > hi):
            bounds = " and ".join(b for b in (f">= {lo}" if lo is not None else "",
                                              f"<= {hi}" if hi is not None else "") if b)
            raise ConfigError(f"{source}: key '{key}': expected {expected} {bounds}, got {value!r}")


def _check_finite(value: Any, key: str, source: str) -> None:
    """NaN and inf parse as TOML floats but are never a meaningful setting (a NaN EMA decay or learning
    rate silently turns every weight into NaN), so they are refused wherever a float is accepted."""
    items = value if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if isinstance(item, (list, tuple)):
            _check_finite(item, key, source)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(f"{source}: key '{key}': expected a finite number, got {value!r}")


def build(cls: type, data: dict[str, Any], *, section: str, source: str) -> Any:
    """Validate ``data`` against dataclass ``cls``; ``section`` prefixes keys in messages (e.g. ``train``)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: key '{section}': expected a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    data = _resolve_aliases(data, fields, section, source)
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{source}: unknown key '{_join(section, key)}'{hint}; "
                              f"valid keys: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{source}: missing key '{_join(section, name)}' "
                                  f"(expected {type_name(hints[name])})")
            continue
        key = _join(section, name)
        expected = type_name(hints[name])
        try:
            value = _coerce(data[name], hints[name])
        except _Mismatch:
            raise ConfigError(f"{source}: key '{key}': expected {expected}, got {data[name]!r}") from None
        _check_finite(value, key, source)
        _check_range(value, f, key, source, expected)
        kwargs[name] = value
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return obj


def _resolve_aliases(data: dict[str, Any], fields: dict[str, dataclasses.Field], section: str,
                     source: str) -> dict[str, Any]:
    """Old key names (``aliases``) renamed to the current ones; giving both is an error."""
    renames = {alias: name for name, f in fields.items() for alias in f.metadata.get("aliases", ())}
    if not renames.keys() & data.keys():
        return data
    out = {}
    for key, value in data.items():
        name = renames.get(key, key)
        if name in out or (name != key and name in data):
            raise ConfigError(f"{source}: keys '{_join(section, key)}' and '{_join(section, name)}' are the same "
                              f"setting ('{key}' is the old name); give only '{_join(section, name)}'")
        out[name] = value
    return out


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a plain dict of TOML/checkpoint-safe values."""
    return dataclasses.asdict(obj)


def _join(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key
