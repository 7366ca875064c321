"""Run a node graph in one process, with the parameters of config/<graph>.yaml; --own-process gives
chosen nodes a child process each, as `ros2 launch` gives every node.

Examples:
  flow2one run sim --own-process sim_world,pointcloud   # the sim deployment graph, as the demo runs it
  flow2one run deploy --nodes camera,pointcloud
  flow2one run sim --set policy.backend=onnxruntime --set executor.n_exec=8
  flow2one run sim --own-process sim_world,pointcloud,view --view --view-save sim.rrd   # watch it in Rerun
"""

from __future__ import annotations

import argparse
import signal
import threading

from flow2one.graph import GRAPHS, graph, parse_overrides
from flow2one.view.switch import add_view_arguments, announce, with_view


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("graph", choices=sorted(GRAPHS), help="graph to run (see flow2one/graph.py)")
    p.add_argument("--nodes", help="comma-separated subset of the graph's nodes (default: all)")
    p.add_argument("--params-file", action="append", default=[], help="extra ROS parameter YAML (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                   help="override one parameter; VALUE is parsed as YAML (repeatable)")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: environment)")
    p.add_argument("--own-process", default="", metavar="NODES",
                   help="comma-separated nodes to start in a child process each (the rest share this one; "
                        "'a+b' puts two in one child). In the sim graph give sim_world and pointcloud their own: "
                        "sharing one GIL starves franky-sim's 1 kHz loop and ages the clouds past the policy's "
                        "max_obs_age_s")
    add_view_arguments(p)


def main(args: argparse.Namespace) -> int:
    from flow2one.ros.runner import placed_nodes, split_graph

    own = args.own_process.split(",")  # empty entries name nothing (process_groups)
    placed = placed_nodes(own)
    nodes = args.nodes.split(",") if args.nodes else list(graph(args.graph).nodes)
    nodes, overrides = with_view(args, nodes, parse_overrides(args.set), "view" in placed, args.graph)
    if placed - set(nodes):
        raise SystemExit(f"--own-process {args.own_process!r}: not nodes of this run ({', '.join(nodes)})")
    if placed and placed >= set(nodes):
        raise SystemExit("--own-process: leave at least one node in this process")
    stopped = threading.Event()

    def on_signal(*_: object) -> None:
        stopped.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with split_graph(args.graph, nodes, own, overrides, args.params_file,
                     args.domain_id) as (runner, children):
        print(f"running graph '{args.graph}': {', '.join(runner.nodes)}"
              + "".join(f", {'+'.join(c.nodes)} (pid {c.proc.pid})" for c in children) + " (Ctrl-C stops)", flush=True)
        for c in children:
            announce(c.output)
        while runner.running and not stopped.wait(0.2):
            dead = [c for c in children if not c.alive]
            if dead:
                print(f"node {'+'.join(dead[0].nodes)} exited with {dead[0].proc.returncode}; stopping the graph:\n"
                      + "\n".join(dead[0].output), flush=True)
                return 1
    return 0
