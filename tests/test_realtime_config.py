"""libfranka's real-time check follows configuration: enforced on the robot graphs, ignored only in the sim.

Against franky-sim over the libfranka protocol: with `realtime: enforce` libfranka (real franky) refuses to
connect on a kernel without real-time capabilities, which is what a robot PC without PREEMPT_RT must do
instead of driving the arm and missing 1 kHz cycles.
"""

from __future__ import annotations

import platform

import pytest

from flow2one.control.config import ExecutorConfig
from flow2one.control.franky_robot import FrankyRobot, RobotError
from flow2one.control.franky_sim import FrankySimProcess
from flow2one.graph import load_params


def test_robot_graphs_enforce_and_sim_graphs_ignore() -> None:
    assert ExecutorConfig().realtime == "enforce"
    for name, mode in (("deploy", "enforce"), ("teleop_record", "enforce"), ("sim", "ignore"),
                       ("sim_teleop_record", "ignore")):
        assert load_params(name)["executor"]["realtime"] == mode, name
    with pytest.raises(ValueError, match="realtime must be one of"):
        ExecutorConfig(realtime="sometimes")


@pytest.mark.skipif("PREEMPT_RT" in platform.uname().version, reason="this kernel is real-time: enforce succeeds")
def test_enforce_refuses_to_connect_without_a_realtime_kernel_and_ignore_connects() -> None:
    with FrankySimProcess() as sim:
        limits = ExecutorConfig(robot_host=sim.host).limits()
        with pytest.raises(RobotError, match="RealtimeException.*realtime") as err:
            FrankyRobot(sim.host, limits, realtime="enforce")
        assert err.value.kind == "communication"
        robot = FrankyRobot(sim.host, limits, realtime="ignore")
        try:
            assert robot.read_state().q.shape == (7,)
        finally:
            robot.disconnect()
