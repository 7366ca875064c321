"""Typed node parameters: a dataclass declares the ROS parameters, their defaults and their checks.

Each node keeps its parameters in one frozen dataclass whose __post_init__ validates values, so a bad
YAML value fails at start-up with the parameter's name instead of deep inside a callback. The same
dataclass lets the runner check every node's parameters (`build_params`) before any node or child
process starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

T = TypeVar("T")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"{f.name} needs a default to be a ROS parameter")


def coerce(name: str, value: Any, default: Any) -> Any:
    """`value` in the type of `default` (what the parameter was declared with): an int is accepted for a
    float, as a YAML author writes `rate_hz: 2`; any other mismatch names the parameter."""
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, float) and isinstance(value, int):
        return float(value)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        if ok and default and isinstance(default[0], float):
            return [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ValueError(f"parameter '{name}' must be {type(default).__name__} (default {default!r}), "
                         f"got {value!r} ({type(value).__name__})")
    return value


def build_params(cls: type[T], values: Mapping[str, Any], node: str) -> T:
    """`cls` from {param: value} as a parameter file or --set gives them, without ROS: unknown names,
    wrong types and the dataclass's own checks fail here with the node's name."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields) - {"use_sim_time"})
    if unknown:
        close = [c for u in unknown for c in difflib.get_close_matches(u, fields, n=1)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"node '{node}' has no parameter(s) {unknown}{hint}")
    hints = typing.get_type_hints(cls)
    out = {}
    for name, value in values.items():
        if name not in fields:
            continue
        try:
            v = coerce(name, value, _default(fields[name]))
        except ValueError as exc:
            raise ValueError(f"node '{node}': {exc}") from None
        out[name] = tuple(v) if isinstance(v, list) and typing.get_origin(hints[name]) is tuple else v
    try:
        return cls(**out)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"node '{node}': invalid parameters: {exc}") from exc


def declare_params(node: Node, cls: type[T]) -> T:
    """Declare every field of `cls` on `node` (default = field default) and build `cls` from the values.

    Declared with dynamic typing so rclpy does not refuse an int for a float parameter itself; `coerce`
    does the type check, with the same rule the runner applies before start-up."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        try:
            default = _default(f)
        except TypeError as exc:
            raise TypeError(f"{cls.__name__}.{exc}") from None
        if isinstance(default, tuple):
            default = list(default)
        value = node.declare_parameter(f.name, default, ParameterDescriptor(dynamic_typing=True)).value
        try:
            value = coerce(f.name, value, default)
        except ValueError as exc:
            raise ValueError(f"node '{node.get_name()}': {exc}") from None
        if isinstance(value, list) and typing.get_origin(hints[f.name]) is tuple:
            value = tuple(value)
        values[f.name] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"node '{node.get_name()}': invalid parameters: {exc}") from exc
