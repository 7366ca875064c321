"""Shared fixtures: every ROS test gets its own rclpy context on its own ROS_DOMAIN_ID, loopback only."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import Phase, settings

from tests.helpers import next_domain_id

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("MUJOCO_GL", "egl")

# scripts/safety_mutants.py: a failing example is all it needs, not the smallest one
settings.register_profile("quick", phases=[Phase.explicit, Phase.reuse, Phase.generate])

@pytest.fixture
def domain_id() -> int:
    return next_domain_id()


@pytest.fixture
def ros_context(domain_id: int) -> Iterator[object]:
    """A fresh, initialised rclpy Context on an isolated domain."""
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    yield ctx
    if ctx.ok():
        rclpy.shutdown(context=ctx)

