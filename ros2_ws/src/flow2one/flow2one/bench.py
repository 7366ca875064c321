"""Run benchmarks and print their figures as one JSON object ({name: result}).

Each benchmark measures its own baseline in the same run and reports medians and ratios, so figures
from a loaded or a different machine stay comparable. --quick runs a short smoke version.

Examples:
  flow2one bench                      # every benchmark
  flow2one bench ros_transport --quick
  flow2one bench --list
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from datetime import UTC, datetime

# name -> "module:function"; function(quick: bool) -> JSON-able dict. Register new benchmarks here.
BENCHES: dict[str, str] = {
    "ros_transport": "flow2one.ros.transport_bench:run",
    "policy_inference": "flow2one.runtime.bench:run",
    "policy_graph_latency": "flow2one.nodes.policy_bench:run",
    "perception_cloud": "flow2one.perception.bench_cloud:run",
    "policy_speed": "flow2one.train.speed:run",
    "bag_recording": "flow2one.data.bench_bags:run",
    "executor_latency": "flow2one.control.bench:run",
    "sim_world": "flow2one.sim.bench:run",
    "view_overhead": "flow2one.view.bench:run",
}


def run_bench(name: str, quick: bool = False) -> dict:
    if name not in BENCHES:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHES)}")
    module, func = BENCHES[name].split(":")
    return getattr(importlib.import_module(module), func)(quick=quick)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all of {', '.join(BENCHES)})")
    p.add_argument("--quick", action="store_true", help="short smoke run (fewer repeats)")
    p.add_argument("--out", help="also write the JSON to this file")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")


def main(args: argparse.Namespace) -> int:
    if args.list:
        print("\n".join(f"{k}  ({v})" for k, v in BENCHES.items()))
        return 0
    names = args.names or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    report: dict = {"meta": {"utc": datetime.now(UTC).isoformat(timespec="seconds"),
                             "host": platform.node(), "python": platform.python_version(), "quick": args.quick}}
    for name in names:
        t0 = time.monotonic()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        report[name] = run_bench(name, quick=args.quick)
        report[name]["wall_s"] = round(time.monotonic() - t0, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0
