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

_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS.append(int(exitstatus))


def pytest_unconfigure(config: pytest.Config) -> None:
    """After the summary: a libfranka client abandoned by a sim test (a link lost on a loaded machine) can hang
    the interpreter's teardown in its destructor, so leave without one, keeping pytest's exit status."""
    import sys

    rig = sys.modules.get("flow2one.sim.rig")
    if rig is not None and _EXIT_STATUS:
        rig.exit_fast_if_abandoned(_EXIT_STATUS[-1])


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

