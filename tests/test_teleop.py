"""Teleop mapping and limits from SpaceMouse HID reports (pyspacemouse's parser) and spacenav Joy messages."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from flow2one import spec
from flow2one.geometry import rotation_angle
from flow2one.teleop.buttons import ButtonMapper
from flow2one.teleop.mapping import TeleopConfig, TeleopMapper, apply_deadband, exp_so3, log_so3
from flow2one.teleop.spacemouse import RecordedHid, joy_to_input, open_spacemouse, state_to_input

HOME_XYZ = np.array([0.45, 0.0, 0.35])
HOME_R = np.diag([1.0, -1.0, -1.0])  # gripper pointing down


def hid_motion(tx: int, ty: int, tz: int, rx: int = 0, ry: int = 0, rz: int = 0) -> list[bytes]:
    """SpaceMouse Compact reports in HID axes (+x right, +y toward the user, +z down; full scale 350):
    report 1 = translation, report 2 = rotation, int16 little-endian, as the device sends them."""
    return [struct.pack("<Bhhh", 1, tx, ty, tz), struct.pack("<Bhhh", 2, rx, ry, rz)]


def hid_buttons(left: int, right: int) -> bytes:
    return bytes([3, left | (right << 1), 0, 0, 0, 0, 0])


def read_all(reports: list[bytes]) -> list[tuple[np.ndarray, tuple[int, ...]]]:
    hid = RecordedHid(reports)
    mouse = open_spacemouse("SpaceMouseCompact", hid=hid)
    out = []
    while not hid.exhausted:
        out.append(state_to_input(mouse.read()))
    return out


def run(mapper: TeleopMapper, axes: np.ndarray, buttons=(0, 0), seconds: float = 1.0, t0: float = 0.0,
        follow: bool = True, dt: float = spec.STEP_DT):
    """Hold an input for `seconds`, ticking at the step rate; the robot tracks the target perfectly
    (follow=True) or stays where it is (follow=False)."""
    xyz, rot = (mapper.xyz, mapper.rot) if mapper.xyz is not None else (HOME_XYZ, HOME_R)
    events, target = [], None
    n = int(round(seconds / dt))
    for k in range(n + 1):
        t = t0 + k * dt
        mapper.update(axes, buttons, t)
        target = mapper.tick(t, xyz, rot, 0.08)
        events += target.events
        if follow:
            xyz, rot = target.xyz, target.rot
    return target, events, t0 + n * dt


def test_hid_reports_parse_into_ros_axes_and_buttons() -> None:
    states = read_all([*hid_motion(0, -350, 0), *hid_motion(175, 0, -350, 0, 0, -350), hid_buttons(1, 0)])
    push_away, _ = states[1]
    np.testing.assert_allclose(push_away, [1, 0, 0, 0, 0, 0], atol=1e-9)  # away from user = +x
    mixed, _ = states[3]
    np.testing.assert_allclose(mixed[:3], [0, -0.5, 1], atol=1e-9)  # right = -y (ROS: y left), up = +z
    assert mixed[5] == pytest.approx(1.0)  # counter-clockwise seen from above = +yaw
    assert states[4][1] == (1, 0)


def test_full_push_moves_at_max_speed_in_base_x() -> None:
    (axes, _), = read_all(hid_motion(0, -350, 0))[1:]
    cfg = TeleopConfig()
    target, _, _ = run(TeleopMapper(cfg), axes, seconds=1.0)
    np.testing.assert_allclose(target.xyz - HOME_XYZ, [cfg.max_linear_speed, 0, 0], atol=1e-9)
    np.testing.assert_allclose(target.rot, HOME_R, atol=1e-12)
    assert target.gripper == spec.GRIPPER_OPEN  # measured 0.08 m: start open


def test_deadband_swallows_drift_and_rescales_above_it() -> None:
    assert np.all(apply_deadband(np.array([0.09, -0.05, 0.1, 0, 0, 0]), 0.1) == 0)
    assert apply_deadband(np.array([1.0]), 0.1)[0] == pytest.approx(1.0)
    assert apply_deadband(np.array([-0.55]), 0.1)[0] == pytest.approx(-0.5)
    drift = read_all(hid_motion(20, -30, 10, 15, -25, 30))[1][0]  # |value| < 35/350
    target, _, _ = run(TeleopMapper(TeleopConfig()), drift, seconds=2.0)
    np.testing.assert_allclose(target.xyz, HOME_XYZ, atol=0)


def test_axis_config_remaps_and_flips() -> None:
    cfg = TeleopConfig(axis_map=(1, 0, 2, 3, 4, 5), axis_signs=(1.0, -1.0, 1.0, 1.0, 1.0, 1.0))
    lin, _ = TeleopMapper(cfg).velocity(np.array([1.0, 0.5, 0, 0, 0, 0]))
    np.testing.assert_allclose(lin, [(0.5 - 0.1) / 0.9 * cfg.max_linear_speed, -cfg.max_linear_speed, 0])
    with pytest.raises(ValueError, match="permutation"):
        TeleopConfig(axis_map=(0, 0, 2, 3, 4, 5))
    with pytest.raises(ValueError, match="frame"):
        TeleopConfig(frame="world")
    with pytest.raises(ValueError, match="unknown button action"):
        TeleopConfig(buttons=("fly",))
    with pytest.raises(ValueError, match="6 finite"):
        TeleopMapper(TeleopConfig()).update(np.array([np.nan] * 6), (), 0.0)


def test_workspace_box_and_lead_limit_bound_the_target() -> None:
    cfg = TeleopConfig()
    down = read_all(hid_motion(0, 0, 350))[1][0]  # HID +z = pressing down
    target, _, _ = run(TeleopMapper(cfg), down, seconds=5.0)
    assert target.xyz[2] == pytest.approx(cfg.workspace_min[2])  # stops at the table margin
    stalled, _, _ = run(TeleopMapper(cfg), np.array([1.0, 1, 0, 0, 0, 1]), seconds=3.0, follow=False)
    assert np.linalg.norm(stalled.xyz - HOME_XYZ) == pytest.approx(cfg.max_lead_m)  # robot did not move
    assert rotation_angle(HOME_R, stalled.rot) == pytest.approx(cfg.max_lead_rad)


def test_rotation_in_base_and_tool_frames() -> None:
    yaw = np.array([0, 0, 0, 0, 0, 1.0])
    base, _, _ = run(TeleopMapper(TeleopConfig()), yaw, seconds=0.5)
    np.testing.assert_allclose(base.rot, exp_so3(np.array([0, 0, 0.3])) @ HOME_R, atol=1e-9)
    tool, _, _ = run(TeleopMapper(TeleopConfig(frame="tool")), yaw, seconds=0.5)
    np.testing.assert_allclose(tool.rot, HOME_R @ exp_so3(np.array([0, 0, 0.3])), atol=1e-9)
    fwd, _, _ = run(TeleopMapper(TeleopConfig(frame="tool")), np.array([0, 0, 1.0, 0, 0, 0]), seconds=0.2)
    assert fwd.xyz[2] < HOME_XYZ[2]  # tool +z points down here
    for rv in (np.array([0.3, -0.2, 0.1]), np.array([0, 0, np.pi - 1e-8]), np.array([np.pi, 0, 0])):
        np.testing.assert_allclose(exp_so3(log_so3(exp_so3(rv))), exp_so3(rv), atol=1e-6)


def test_input_timeout_stops_motion() -> None:
    m = TeleopMapper(TeleopConfig())
    m.update(np.array([1.0, 0, 0, 0, 0, 0]), (), 0.0)
    xyz, xs = HOME_XYZ, []
    for t in np.arange(0.0, 2.0, 0.05):
        xyz = m.tick(t, xyz, HOME_R).xyz  # robot follows
        xs.append(xyz[0])
    moved = np.diff(xs)
    assert moved[:9].min() > 0 and np.all(moved[12:] == 0)  # moves for input_timeout_s, then holds


def test_buttons_drive_gripper_and_episodes() -> None:
    reports = [hid_buttons(1, 0), hid_buttons(0, 0),  # left click: gripper toggles (on press)
               hid_buttons(0, 1), hid_buttons(0, 0),  # right click: start
               hid_buttons(0, 1), hid_buttons(0, 0)]  # right click: stop as success
    states = read_all(reports)
    m = TeleopMapper(TeleopConfig())
    m.tick(0.0, HOME_XYZ, HOME_R, 0.08)
    events, grippers = [], []
    for k, (axes, buttons) in enumerate(states):
        m.update(axes, buttons, 0.1 * (k + 1))
        tgt = m.tick(0.1 * (k + 1), HOME_XYZ, HOME_R, 0.08)
        events += tgt.events
        grippers.append(tgt.gripper)
    assert grippers[0] == spec.GRIPPER_CLOSED and grippers[-1] == spec.GRIPPER_CLOSED
    assert events == ["start", "success"]
    # right has a long action, so its short action fires on release; holding 1.2 s discards instead
    _, ev_press, t = run(m, np.zeros(6), buttons=(0, 1), seconds=0.2, t0=1.0)
    _, ev_release, t = run(m, np.zeros(6), buttons=(0, 0), seconds=0.1, t0=t + 0.05)
    assert (ev_press, ev_release) == ([], ["start"])
    _, ev_hold, t = run(m, np.zeros(6), buttons=(0, 1), seconds=1.2, t0=t + 0.05)
    _, ev_rel, _ = run(m, np.zeros(6), buttons=(0, 0), seconds=0.1, t0=t + 0.05)
    assert ev_hold == ["discard"] and ev_rel == [] and not m.recording


def test_button_mapper_long_press_threshold() -> None:
    b = ButtonMapper(("gripper_toggle", "episode_toggle"), ("", "episode_failure"), 0.5)
    assert b.update((1, 1), 0.0) == ["gripper_toggle"]
    assert b.poll(0.4) == [] and b.poll(0.5) == ["episode_failure"]
    assert b.update((0, 0), 0.6) == []


def test_spacenav_joy_messages_drive_the_node(ros_context, domain_id) -> None:
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import Joy
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from flow2one.geometry import matrix_to_quat
    from flow2one.ros.convert import msg_to_chunk, numpy_to_pose_stamped
    from flow2one.ros.qos import CHUNK_QOS, STATE_QOS
    from flow2one.ros.runner import GraphRunner
    from tests.helpers import wait_for

    with pytest.raises(ValueError, match="6 axes"):
        joy_to_input([0.0] * 3, [])
    chunks, events = [], []
    with GraphRunner("sim_teleop_record", nodes=["teleop"], domain_id=domain_id,
                     overrides={"teleop": {"input": "joy"}}) as g:
        probe = rclpy.create_node("teleop_probe", context=g.context)
        pose_pub = probe.create_publisher(PoseStamped, spec.EE_POSE_TOPIC, STATE_QOS)
        joy_pub = probe.create_publisher(Joy, "/spacenav/joy", 10)
        probe.create_subscription(JointTrajectory, spec.CHUNK_TOPIC, lambda m: chunks.append(msg_to_chunk(m)),
                                  CHUNK_QOS)
        probe.create_subscription(String, spec.EPISODE_TOPIC, lambda m: events.append(m.data), 10)
        g.add_node(probe)
        pose = numpy_to_pose_stamped(HOME_XYZ, matrix_to_quat(HOME_R), 0, spec.BASE_FRAME)

        def feed(axes, buttons, seconds):
            import time
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                pose_pub.publish(pose)
                joy_pub.publish(Joy(axes=axes, buttons=buttons))
                time.sleep(0.02)

        # chunks flowing say the pose reached the node; the Joy pair is discovered on its own (a press fed
        # before it is matched is lost, which a loaded machine makes likely)
        assert wait_for(lambda: (pose_pub.publish(pose) or True) and len(chunks) > 2
                        and joy_pub.get_subscription_count() > 0, 15)
        first = chunks[-1].actions[0].copy()
        feed([0.0, 0.0, 1.0, 0.0, 0.0, 0.0], [0, 0], 0.5)  # up, robot "stalled" at HOME
        feed([0.0] * 6, [0, 1], 0.1)
        feed([0.0] * 6, [0, 0], 0.2)
        assert wait_for(lambda: events == ["start"], 5), events
    np.testing.assert_allclose(first[:3], HOME_XYZ, atol=1e-6)
    up = chunks[-1].actions[0]
    assert chunks[-1].actions.shape == (10, spec.ACTION_DIM) and np.all(chunks[-1].actions == up)  # held target
    assert 0.02 < up[2] - HOME_XYZ[2] <= TeleopConfig().max_lead_m + 1e-6  # moved up, within the lead limit
    assert up[-1] == pytest.approx(spec.GRIPPER_OPEN)
