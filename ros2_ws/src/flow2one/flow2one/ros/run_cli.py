"""Run a node graph in one process, with the parameters of config/<graph>.yaml.

Examples:
  flow2one run sim                            # the whole sim deployment graph
  flow2one run deploy --nodes camera,pointcloud
  flow2one run sim --set policy.backend=onnxruntime --set executor.n_exec=8
"""

from __future__ import annotations

import argparse
import signal

import yaml

from flow2one.graph import GRAPHS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("graph", choices=sorted(GRAPHS), help="graph to run (see flow2one/graph.py)")
    p.add_argument("--nodes", help="comma-separated subset of the graph's nodes (default: all)")
    p.add_argument("--params-file", action="append", default=[], help="extra ROS parameter YAML (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                   help="override one parameter; VALUE is parsed as YAML (repeatable)")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: environment)")


def parse_overrides(items: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        node, dot, param = key.partition(".")
        if not sep or not dot or not node or not param:
            raise SystemExit(f"--set expects NODE.PARAM=VALUE, got {item!r}")
        out.setdefault(node, {})[param] = yaml.safe_load(value)
    return out


def main(args: argparse.Namespace) -> int:
    from flow2one.ros.runner import GraphRunner

    nodes = args.nodes.split(",") if args.nodes else None
    runner = GraphRunner(args.graph, nodes=nodes, params_files=args.params_file,
                         overrides=parse_overrides(args.set), domain_id=args.domain_id)
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True
        runner.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with runner:
        print(f"running graph '{args.graph}': {', '.join(runner.nodes)} (Ctrl-C stops)", flush=True)
        runner.wait()
    return 0
