"""Mappings (YAML, JSON, plan keys) ↔ dataclass configs, for any config made of fields and groups of fields.

    cfg = build(TrainConfig, {"lr": 1e-4, "sampling": {"temperature": 0.7}})   # ConfigError on an unknown key

A group is a field whose type is a dataclass; its fields can be given flat (``temperature``) or under the group's
name (``sampling: {temperature: ...}``), with hyphens or underscores. Values are checked against the field's type
here (YAML reads ``1e-4`` as a string: it becomes a float) and against the field's range by the config itself.
Standard library only.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from selfdistill.errors import UserError


class ConfigError(UserError):
    """A setting that is unknown, of the wrong type, out of range, or does not fit another setting, the loaded
    model or the data (exit code 2)."""


def bad(name: str, ok: bool, why: str) -> None:
    """Raise ConfigError naming the field as users write its flag (``--max-new-tokens: must be > 0``) unless ok."""
    if not ok:
        raise ConfigError(f"--{name.replace('_', '-')}: {why}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def groups(cls: type) -> dict[str, type]:
    """The fields of ``cls`` whose type is a dataclass (its groups), by name."""
    return {name: hint for name, hint in _hints(cls).items() if dataclasses.is_dataclass(hint)}


def option_types(cls: type) -> dict[str, Any]:
    """Every leaf field of ``cls`` (its own and its groups', flat) → its type annotation."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = _hints(cls)[f.name]
        out.update(option_types(hint) if dataclasses.is_dataclass(hint) else {f.name: hint})
    return out


def flat_items(cls: type, values: Mapping[str, Any]) -> Iterator[tuple[str, str | None, Any]]:
    """``(key as written, field name or None when unknown, value)`` for each setting, group mappings opened."""
    known, nested = option_types(cls), groups(cls)
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name in nested and isinstance(value, Mapping):
            members = {f.name for f in dataclasses.fields(nested[name])}
            for sub, item in value.items():
                sub_name = str(sub).replace("-", "_")
                yield f"{key}.{sub}", sub_name if sub_name in members else None, item
        else:
            yield str(key), name if name in known else None, value


def unknown_key(cls: type, key: str) -> str:
    """``unknown option 'lrr' (did you mean 'lr'?)``: the hint compares names without their separators' noise."""
    names = sorted([*option_types(cls), *groups(cls)])
    close = difflib.get_close_matches(key.rpartition(".")[2].replace("-", "_"), names, n=1, cutoff=0.7)
    return f"unknown option {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def coerce(value: Any, hint: Any) -> Any:
    """``value`` as type ``hint`` (a config field's annotation), or raise TypeError saying what was expected."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg)
            except TypeError as err:
                errors.append(str(err))
        raise TypeError(" or ".join(errors))
    if origin is Literal:
        if isinstance(value, bool) or value not in args:
            raise TypeError(f"one of {', '.join(map(str, args))}")
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise TypeError("a list")
        return [coerce(item, args[0]) for item in value]
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError("true/false")
        return value
    if hint is float:
        value = float_or_text(value) if isinstance(value, str) else value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError("a number")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("an integer")
        return value
    if hint is Path:
        if not isinstance(value, str | Path):
            raise TypeError("a path")
        return Path(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError("a string")
        return value
    raise TypeError(f"a {hint}")


def float_or_text(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def typed(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The settings in ``values`` as ``{field name: typed value}``; ConfigError names an unknown key or a bad type."""
    known = option_types(cls)
    out: dict[str, Any] = {}
    for key, name, value in flat_items(cls, values):
        if name is None:
            raise ConfigError(unknown_key(cls, key))
        if name in out:
            raise ConfigError(f"{key}: {name} is set twice (flat and in its group)")
        try:
            out[name] = coerce(value, known[name])
        except TypeError as err:
            raise ConfigError(f"{key}: expected {err}, got {value!r}") from None
    return out


_ABSENT = object()


def build(cls: type, values: Mapping[str, Any], missing: Any = _ABSENT) -> Any:
    """``cls`` from a mapping (flat keys, group keys or both); its own checks run. ``missing`` stands in for a
    required field the mapping lacks (the CLI passes tyro's marker, so the command line can still give it)."""
    return _construct(cls, typed(cls, values), missing)


def _construct(cls: type, flat: dict[str, Any], missing: Any) -> Any:
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = _hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = _construct(hint, flat, missing)
        elif f.name in flat:
            kwargs[f.name] = flat[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if missing is _ABSENT:
                raise ConfigError(f"{f.name}: missing (required)")
            kwargs[f.name] = missing
    return cls(**kwargs)


def flat_values(cfg: Any) -> dict[str, Any]:
    """Every leaf field of a config, flat, as JSON-safe values (paths as strings, lists copied)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flat_values(value))
        else:
            out[f.name] = str(value) if isinstance(value, Path) else list(value) if isinstance(value, list) else value
    return out


def run_checks(cfg: Any) -> Any:
    """Run the ``__post_init__`` of a config's groups, then its own (for a config built with its checks off)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            run_checks(value)
    post_init = getattr(cfg, "__post_init__", None)
    if post_init is not None:
        post_init()
    return cfg
