"""Replay a recorded episode bag into the replay graph (pointcloud + policy) and print open-loop metrics.

The bag's camera images and robot state are published with their original stamps while /clock follows
the bag (every node of the graph runs with use_sim_time), the point-cloud node rebuilds the clouds, the
policy predicts chunks, and each chunk is compared with the actions recorded in the bag: distance to
the recorded actions, mode switches between consecutive chunks, latency (see flow2one/data/replay.py).

Examples:
  flow2one replay demos/episode_00003.mcap --model-dir models/sim_student
  flow2one replay demos/episode_00003.mcap --rate 0 --out metrics.json        # lock-step, fast
  flow2one replay bag.mcap --set pointcloud.calibration_file=calibration/lab_d435.yaml
  flow2one replay bag.mcap --view --view-save replay.rrd     # watch cloud, candidates, chosen chunks in Rerun
"""

from __future__ import annotations

import argparse
import json
import sys

from flow2one.data.bags import BagError, read_summary
from flow2one.ros.run_cli import parse_overrides
from flow2one.view.switch import add_view_arguments, with_view

REPLAY_MAX_OBS_AGE_S = 1.0  # policy freshness gate during replay (override with --set policy.max_obs_age_s=...)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bag", help="an episode .mcap file (recover .part files first with `flow2one recover-bag`)")
    p.add_argument("--model-dir", help="policy checkpoint directory (default: config/replay.yaml)")
    p.add_argument("--rate", type=float, default=1.0,
                   help="playback speed: 1 = original timing, 0 = lock-step as fast as the graph answers")
    p.add_argument("--timeline", choices=("auto", "receive", "stamp"), default="auto",
                   help="replay in the recorder's receive order/timing (like ros2 bag play) or by header "
                        "stamps (data time); auto: receive with --rate > 0, stamp with --rate 0")
    p.add_argument("--out", default="", help="write the metrics JSON here as well as to stdout")
    p.add_argument("--republish-points", action="store_true",
                   help="play the recorded clouds instead of recomputing them (no pointcloud node)")
    p.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                   help="override a parameter of the replay graph (repeatable)")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: environment)")
    p.add_argument("--timeout", type=float, default=0.0, help="give up after this many seconds (0: automatic)")
    add_view_arguments(p)


def run_replay(bag: str, rate: float = 1.0, overrides: dict | None = None, republish_points: bool = False,
               metrics_file: str = "", domain_id: int | None = None, timeout: float = 0.0,
               timeline: str = "auto", view: dict | None = None) -> dict:
    """Start the replay graph, wait for the bag to finish, return the metrics dict. `view`: the view node's
    parameters, when it should watch the replay (on the bag's clock, like the other nodes)."""
    from flow2one.graph import graph
    from flow2one.ros.runner import GraphRunner

    summary = read_summary(bag)
    nodes = [n for n in graph("replay").nodes if not (republish_points and n == "pointcloud")]
    merged: dict[str, dict] = {n: {"use_sim_time": True} for n in nodes if n != "replay"}
    # Open-loop replay scores predictions, not freshness: the bag's receive times carry the recording
    # machine's load (sim cameras at a few fps here), which the deploy gate of 0.25 s would turn into
    # skipped observations. Latency is still measured, in wall time, by the replay node.
    merged["policy"]["max_obs_age_s"] = REPLAY_MAX_OBS_AGE_S
    merged["replay"] = {"bag": str(bag), "rate": float(rate), "republish_points": republish_points,
                        "metrics_file": metrics_file, "timeline": timeline}
    for node, params in (overrides or {}).items():
        merged.setdefault(node, {}).update(params)
    if view is not None:
        nodes.append("view")
        merged["view"] = {"use_sim_time": True, "nice": 0, **view}  # in this process, with the policy
    duration = (summary.end_ns - summary.start_ns) / 1e9
    limit = timeout or (duration / rate + 60.0 if rate > 0 else 30.0 + 10.0 * duration)
    with GraphRunner("replay", nodes=nodes, overrides=merged, domain_id=domain_id) as runner:
        replay = runner.nodes["replay"]
        if not replay.done.wait(limit):
            raise TimeoutError(f"replay of {bag} did not finish within {limit:.0f} s")
        return replay.result


def main(args: argparse.Namespace) -> int:
    _, overrides = with_view(args, ["policy"], parse_overrides(args.set))
    view = overrides.pop("view", None)
    if args.model_dir:
        overrides.setdefault("policy", {})["model_dir"] = args.model_dir
    try:
        result = run_replay(args.bag, args.rate, overrides, args.republish_points, args.out, args.domain_id,
                            args.timeout, args.timeline, view)
    except (BagError, ValueError, TimeoutError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0 if result.get("chunks", 0) > 0 else 1
