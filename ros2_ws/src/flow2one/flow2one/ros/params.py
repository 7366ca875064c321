"""Typed node parameters: a dataclass declares the ROS parameters, their defaults and their checks.

Each node keeps its parameters in one frozen dataclass whose __post_init__ validates values, so a bad
YAML value fails at start-up with the parameter's name instead of deep inside a callback.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import TypeVar

from rclpy.node import Node

T = TypeVar("T")


def declare_params(node: Node, cls: type[T]) -> T:
    """Declare every field of `cls` on `node` (default = field default) and build `cls` from the values."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            raise TypeError(f"{cls.__name__}.{f.name} needs a default to be a ROS parameter")
        if isinstance(default, tuple):
            default = list(default)
        value = node.declare_parameter(f.name, default).value
        if isinstance(value, list) and typing.get_origin(hints[f.name]) is tuple:
            value = tuple(value)
        values[f.name] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"node '{node.get_name()}': invalid parameters: {exc}") from exc
