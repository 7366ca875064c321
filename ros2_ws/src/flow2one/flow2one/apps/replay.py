"""Replay a recorded episode bag into the replay graph (pointcloud + policy) and print open-loop metrics.

The bag's camera images and robot state are published with their original stamps while /clock follows
the bag (every node of the graph runs with use_sim_time), the point-cloud node rebuilds the clouds, the
policy predicts chunks, and each chunk is compared with the actions recorded in the bag: distance to
the recorded actions, mode switches between consecutive chunks, latency (see flow2one/data/replay.py).

Examples:
  flow2one replay demos/episode_00003.mcap --model-dir models/sim_student
  flow2one replay demos/episode_00003.mcap --rate 0 --out metrics.json        # lock-step, fast
  flow2one replay bag.mcap --set pointcloud.calibration_file=calibration/lab_d435.yaml
  flow2one replay lab_bags/run_03 --profile realsense_franka \
      --set pointcloud.calibration_file=calibration/lab_d435.yaml --set pointcloud.cameras=front
  flow2one replay bag.mcap --view --view-save replay.rrd     # watch cloud, candidates, chosen chunks in Rerun
"""

from __future__ import annotations

import argparse
import json
import sys

from flow2one.data.bags import BagError, read_summary
from flow2one.view.switch import add_view_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bag", help="a bag: an episode .mcap file, a rosbag2 directory (MCAP or sqlite3) or a .db3 "
                               "file (recover .part files first with `flow2one recover-bag`)")
    p.add_argument("--profile", default="flow2one",
                   help="topic profile of the bag: flow2one (our recorder), realsense_franka (realsense-ros + "
                        "franka_ros2) or a YAML file (config/topics/)")
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
    p.add_argument("--own-process", default="pointcloud,policy", metavar="NODES",
                   help="comma-separated nodes to start in a child process each, as launch starts every node "
                        "(default: pointcloud,policy, so neither cloud building nor the bag's playback holds the "
                        "GIL an inference needs; 'pointcloud+policy' puts both in one child; '' runs the whole "
                        "graph in this process)")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: environment)")
    p.add_argument("--timeout", type=float, default=0.0, help="give up after this many seconds (0: automatic)")
    add_view_arguments(p)


def graph_cameras(overrides: dict) -> list[str]:
    """The cameras the replay graph's pointcloud node will read (its calibration file and camera subset)."""
    from flow2one.graph import load_params
    from flow2one.perception.calibration import load_cameras, select_cameras

    params = {**load_params("replay").get("pointcloud", {}), **overrides.get("pointcloud", {})}
    calib = params.get("calibration_file", "calibration/sim.yaml")
    return [c.name for c in select_cameras(load_cameras(calib), params.get("cameras", ""), calib)]


def run_replay(bag: str, rate: float = 1.0, overrides: dict | None = None, republish_points: bool = False,
               metrics_file: str = "", domain_id: int | None = None, timeout: float = 0.0,
               timeline: str = "auto", profile: str = "flow2one", view: dict | None = None,
               own_process: tuple[str, ...] = ("pointcloud", "policy")) -> dict:
    """Start the replay graph, wait for the bag to finish, return the metrics dict. A bag that cannot give
    a chunk (a missing topic, calibration cameras not in it) is refused before the graph starts. `view`: the
    view node's parameters as view.switch.with_view gives them (on the bag's clock, in this process), when it
    should watch the replay. `own_process`: nodes started in a child process each, "a+b" two in one (replay
    stays here: the metrics are read from it)."""
    from flow2one.data.profiles import load_profile
    from flow2one.data.replay import recorded_actions, replay_plan
    from flow2one.graph import OPTIONAL_NODES, graph
    from flow2one.ros.runner import placed_nodes, process_groups, split_graph

    placed = placed_nodes(own_process)
    if "replay" in placed:
        raise ValueError("--own-process: the replay node runs in this process (its metrics are read here)")
    unknown = sorted(placed - set(graph("replay").nodes) - set(OPTIONAL_NODES))
    if unknown:
        raise ValueError(f"--own-process: {', '.join(unknown)} not in the replay graph ({', '.join(graph('replay').nodes)})")
    summary = read_summary(bag)
    overrides = overrides or {}
    cams = [] if republish_points else graph_cameras(overrides)
    topic_profile = load_profile(profile)
    replay_plan(bag, topic_profile, republish_points, cams)
    recorded_actions(bag, topic_profile)
    nodes = [n for n in graph("replay").nodes if not (republish_points and n == "pointcloud")]
    merged: dict[str, dict] = {}  # bag time and the replay's freshness gate come from config/replay.yaml
    if view is not None:
        nodes.append("view")
    merged["replay"] = {"bag": str(bag), "rate": float(rate), "republish_points": republish_points,
                        "metrics_file": metrics_file, "timeline": timeline, "profile": profile,
                        "cameras": ",".join(cams), "wait_for_nodes": ",".join(n for n in nodes if n != "replay")}
    for node, params in overrides.items():
        merged.setdefault(node, {}).update(params)
    if view is not None:
        merged["view"] = view
    duration = (summary.end_ns - summary.start_ns) / 1e9
    limit = timeout or (duration / rate + 60.0 if rate > 0 else 30.0 + 10.0 * duration)
    # (--republish-points: no pointcloud node to place)
    own = ["+".join(n for n in g if n in nodes) for g in process_groups(own_process)]
    with split_graph("replay", nodes, own, merged, domain_id=domain_id) as (runner, _):
        replay = runner.nodes["replay"]
        if not replay.done.wait(limit):
            raise TimeoutError(f"replay of {bag} did not finish within {limit:.0f} s ({no_chunk_cause(runner)})")
        if replay.result.get("chunks", 0) == 0 and "error" not in replay.result:
            replay.result["error"] = f"no chunk predicted: {no_chunk_cause(runner)}"
        return replay.result


def no_chunk_cause(runner) -> str:
    """Why the graph predicted nothing, from its nodes' last /diagnostics: the pointcloud node's when it is
    not publishing, else the policy's."""
    status = runner.nodes["replay"].diagnostics
    pc = status.get("pointcloud")
    if pc is not None and pc != "publishing":
        return f"the pointcloud node: {pc}"
    return f"the policy node: {status.get('policy', 'no status received')}"


def main(args: argparse.Namespace) -> int:
    from flow2one.graph import parse_overrides
    from flow2one.view.switch import with_view

    _, overrides = with_view(args, ["policy"], parse_overrides(args.set), graph_name="replay")
    view = overrides.pop("view", None)
    if args.model_dir:
        overrides.setdefault("policy", {})["model_dir"] = args.model_dir
    try:
        result = run_replay(args.bag, args.rate, overrides, args.republish_points, args.out, args.domain_id,
                            args.timeout, args.timeline, args.profile, view,
                            tuple(n for n in args.own_process.split(",") if n))
    except (BagError, ValueError, TimeoutError) as exc:
        print(f"flow2one replay: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    if result.get("chunks", 0) == 0:
        print(f"flow2one replay: error: {result.get('error', 'no chunk predicted')}", file=sys.stderr)
        return 1
    return 0
