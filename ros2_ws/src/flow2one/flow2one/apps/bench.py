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
import json
import platform
import sys
import time
from datetime import UTC, datetime

from flow2one.bench import BENCHES, module_name, run_bench


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all of {', '.join(BENCHES)})")
    p.add_argument("--quick", action="store_true", help="short smoke run (fewer repeats)")
    p.add_argument("--out", help="also write the JSON to this file")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")


def main(args: argparse.Namespace) -> int:
    if args.list:
        print("\n".join(f"{k}  ({module_name(k)})" for k in BENCHES))
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
