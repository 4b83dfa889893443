"""Strict dataclasses from plain data (JSON, YAML, command lines): every value checked against its
field's declared type, YAML read as people write it, and dotted-key overrides in one place.

Configs and recipes may come from someone else, so a wrong value is a `ConfigError` that names the
key, the type it needs and the value it got, never a TypeError deep inside a backend.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from typing import Any, TypeVar, Union

import yaml


class ConfigError(ValueError):
    """A config value that cannot work, named by its dotted key."""


T = TypeVar("T")


def from_plain(cls: type[T], data: dict[str, Any], where: str) -> T:
    """`cls(**data)`, refusing unknown keys, missing required keys and values of the wrong type."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object (a mapping of keys to values), got {describe_value(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    for name, f in fields.items():
        if name in data:
            _check_type(data[name], hints[name], name if where in ("config", "recipe") else f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: the required key {name!r} is missing")
    return cls(**data)


def _check_type(value: Any, annotation: Any, key: str) -> None:
    """Values as they come from JSON or YAML, checked against a field's declared type."""
    if _type_allows(value, annotation):
        return
    raise ConfigError(f"{key} must be {_type_name(annotation)}, got {describe_value(value)}")


def _type_allows(value: Any, annotation: Any) -> bool:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_type_allows(value, a) for a in args)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:  # an int is a fine float (lr: 1); a bool or a string is not
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is str:
        return isinstance(value, str)
    if dataclasses.is_dataclass(annotation):
        return isinstance(value, (dict, annotation))
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_type_allows(v, a) for v, a in zip(value, args))
        return all(_type_allows(v, args[0]) for v in value) if args else True
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    return isinstance(value, annotation)


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if annotation is type(None):
        return "null"
    if dataclasses.is_dataclass(annotation) or origin is dict:
        return "an object"
    if origin in (tuple, list):
        count = f"{len(args)} " if origin is tuple and args and args[-1] is not Ellipsis else ""
        return f"a list of {count}{_plural(args[0]) if args else 'values'}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(annotation, str(annotation))


def _plural(annotation: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(annotation, _type_name(annotation))


def describe_value(value: Any) -> str:
    if value is None:
        return "null"
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)
    return f"{kind} ({json.dumps(value, default=str)[:60]})"


# YAML 1.1 (PyYAML's) reads 1e-4 as a string; YAML 1.2 and every user read it as a number.
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)$")


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader (no Python objects), with YAML 1.2's exponent floats, and no aliases: a
    few hundred bytes of nested aliases ("billion laughs") expand to more than any memory holds, and
    a recipe has no need of them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(f"line {mark.line + 1}: an alias (*{self.peek_event().anchor}); write the value out "
                                 "instead, as recipes may not repeat parts by reference")
        return super().compose_node(parent, index)


_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """YAML as a person means it: safe (plain data only), and `1e-4` is a number."""
    try:
        return yaml.load(text, Loader=_Yaml12Loader)
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML ({e})") from e


def parse_override(item: str) -> tuple[str, Any]:
    """`key=value` from a command line: a dotted key, and the value read as a YAML scalar or flow mapping."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form key=value (e.g. optim.lr=1e-4)")
    try:
        return key.strip(), load_yaml(text)
    except ConfigError as e:
        raise ConfigError(f"override {item!r}: the value is {e}") from e


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of `data` with dotted-key overrides applied; a mapping value merges into the section it
    replaces. A parent that holds a value is an error; an absent one becomes a section, whose keys
    are then checked like any others (so a misspelt section is refused by name)."""
    data = json.loads(json.dumps(data, default=list))  # a deep copy: the caller's dict is never changed
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = data
        for depth, part in enumerate(parents):
            if not isinstance(node.get(part), dict):
                if part in node and node[part] is not None:
                    raise ConfigError(f"override {key!r}: {'.'.join(parents[:depth + 1])!r} is not a section")
                node[part] = {}  # an optional section left empty (e.g. lm: null, or absent)
            node = node[part]
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf] = {**node[leaf], **value}
        else:
            node[leaf] = value
    return data


def check_bounds(obj: Any, bounds: dict[str, tuple[float, float]], where: str) -> None:
    """Every numeric field named in `bounds` within its (low, high), inclusive; a tuple field item by item.
    A value outside its range is a `ConfigError` naming the key, the range and the value."""
    for key, (low, high) in bounds.items():
        value = getattr(obj, key)
        for item in value if isinstance(value, (tuple, list)) else [value]:
            if item is not None and not low <= item <= high:
                name = f"{where}.{key}" if where else key
                raise ConfigError(f"{name} must be from {low:g} to {high:g}, got {item!r}")
