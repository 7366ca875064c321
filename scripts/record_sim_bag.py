"""Record one teleoperated sim episode as the lab records one: depth + colour of both sim cameras, robot state
and commands, in an episode .mcap. It is the input of the replay-graph latency run (results/latency/): a bag
whose depth images match calibration/sim.yaml, so replay goes bag -> pointcloud node -> policy.

    .venv/bin/python scripts/record_sim_bag.py OUT_DIR [--seconds 12] [--domain-id 57]

Every node but the recorder runs in a process of its own (as launch starts them); a SpaceMouse is stood in for by Joy messages that
push the arm around a square. Nothing here is measured: the bag is the measurement's input.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path


def _wait(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        time.sleep(0.05)
    return bool(cond())


def _serving(host: str) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, 1337)) == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder for episode_00000.mcap")
    ap.add_argument("--seconds", type=float, default=12.0, help="how long the arm is pushed around")
    ap.add_argument("--task", default="track", help="sim task (scene) to record in")
    ap.add_argument("--domain-id", type=int, default=57)
    args = ap.parse_args()

    import rclpy
    from sensor_msgs.msg import Joy

    from flow2one.control.franky_sim import free_loopback_host
    from flow2one.graph import GRAPHS
    from flow2one.paths import repo_root
    from flow2one.ros.runner import split_graph

    host = free_loopback_host()
    overrides = {"sim_world": {"host": host, "task": args.task}, "executor": {"robot_host": host},
                 "teleop": {"input": "joy", "max_linear_speed": 0.08},
                 "recorder": {"output_dir": str(args.out), "cameras": ["front", "wrist"]},
                 "pointcloud": {"calibration_file": str(repo_root() / "calibration" / "sim.yaml")}}
    graph = "sim_teleop_record"
    # A process per node, as launch starts them; the recorder stays here, where its state is read. Beside the
    # pointcloud node, executor and teleop, it logged the 100 Hz robot state 0.84 s after the stamps, and a
    # replay on the receive timeline then found no EE pose near the wrist camera's images
    with split_graph(graph, GRAPHS[graph].nodes, ("sim_world", "pointcloud", "executor", "teleop"), overrides,
                     domain_id=args.domain_id) as (g, _):
        if not _wait(lambda: _serving(host), 60):
            print("record_sim_bag: franky-sim does not serve the robot", file=sys.stderr)
            return 1
        node = rclpy.create_node("joy_stand_in", context=g.context)
        joy = node.create_publisher(Joy, "/spacenav/joy", 10)
        g.add_node(node)

        def hold(axes: list[float], buttons: list[int], seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                joy.publish(Joy(axes=axes, buttons=buttons))
                time.sleep(0.02)

        recorder = g.nodes["recorder"]
        if not _wait(lambda: not recorder.waiting_for, 60):
            print(f"record_sim_bag: the recorder still waits for {recorder.waiting_for}", file=sys.stderr)
            return 1
        still = [0.0] * 6

        def press(until, what: str) -> bool:
            """Right button (acts on release) until the recorder shows it: with teleop in another process, a
            press before the Joy and episode topics are matched is lost, and CI once saved no episode so."""
            for _ in range(4):
                hold(still, [0, 1], 0.2)
                hold(still, [0, 0], 0.3)
                if _wait(until, 3.0):
                    return True
            print(f"record_sim_bag: the recorder did not {what}", file=sys.stderr)
            return False

        if not _wait(lambda: joy.get_subscription_count() > 0, 30) or not press(
                lambda: recorder.core.recording, "start an episode"):
            return 1
        side = args.seconds / 4
        for ax in ([0.8, 0.0], [0.0, 0.8], [-0.8, 0.0], [0.0, -0.8]):
            hold([*ax, 0.0, 0.0, 0.0, 0.0], [0, 0], side)
        if not press(lambda: not recorder.core.recording, "stop the episode"):
            return 1
        if not _wait(lambda: any(args.out.glob("episode_*.mcap")), 15):
            print("record_sim_bag: no episode was saved", file=sys.stderr)
            return 1
    print(f"record_sim_bag: {sorted(args.out.glob('episode_*.mcap'))[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
