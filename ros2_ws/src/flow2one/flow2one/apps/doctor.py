"""Preflight of a robot PC before the first launch: one checklist, a fix for every failure.

Reads the graph's parameter file (as `ros2 launch` / `flow2one run` would) and checks what the graph will
need: ROS 2 distro and middleware; franky and the libfranka it bundles against the robot generation; the
robot's FCI port; real-time limits, PREEMPT_RT kernel and CPU governor; the RealSense serials of the
calibration file on USB 3 with current firmware; the calibration file and its age; the model card against
the policy node's parameters; the TensorRT engine for this GPU; disk space for recordings.
Exits 1 when any check FAILs (WARN: works, but not as it should on the robot).

Examples:
  flow2one doctor                                   # the deploy graph, a Panda (FER)
  flow2one doctor --graph sim                       # the sim graph (needs franky-sim running)
  flow2one doctor --robot fr3 --set executor.robot_host=172.16.0.2
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import yaml

from flow2one.graph import GRAPHS
from flow2one.preflight import FAIL, LIBFRANKA_FOR, format_checklist, run_checks


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--graph", default="deploy", choices=sorted(GRAPHS), help="graph to check (default deploy)")
    p.add_argument("--robot", default=None, choices=sorted(LIBFRANKA_FOR),
                   help="robot generation: fer (Franka Emika Robot / Panda) or fr3 (default: fer, fr3 for the sim "
                        "graphs, whose franky-sim serves an FR3)")
    p.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                   help="override a parameter of the graph's file, as `flow2one run` does")
    p.add_argument("--max-calibration-age-days", type=float, default=30.0,
                   help="warn when the calibration file is older (default 30)")
    p.add_argument("--json", action="store_true", help="print the checks as JSON instead of a checklist")


def main(args: argparse.Namespace) -> int:
    overrides: dict[str, dict] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        node, dot, param = key.partition(".")
        if not (sep and dot and node and param):
            print(f"--set expects NODE.PARAM=VALUE, got {item!r}")
            return 2
        overrides.setdefault(node, {})[param] = yaml.safe_load(value)
    checks = run_checks(args.graph, args.robot, overrides, args.max_calibration_age_days)
    print(json.dumps([asdict(c) for c in checks], indent=2) if args.json else format_checklist(checks))
    return 1 if any(c.status == FAIL for c in checks) else 0
