"""`flow2one latency [GRAPH]`: where the time goes from camera frame to franky command, stage by stage.

Runs a graph with a collector on /flow2one/trace (flow2one/ros/trace.py) and writes OUT/latency.json (the
per-stage breakdown, end-to-end figures and, with --compare, the current scheduling against the old one measured
in the same run, alternating, with ratios) and one waterfall + CDF PNG per run.

Graphs:
  sim    the sim graph as `flow2one demo` runs it (sim world and pointcloud node in child processes, policy +
         executor here, franky-sim over libfranka): frame -> ... -> franky target
  probe  the policy node beside a 30 Hz observation probe in one process (`flow2one bench
         policy_graph_latency`): cloud published -> chunk received by the probe; a small random student
  listen starts nothing: collects the trace of a graph already running on this ROS domain (the robot's,
         started by `ros2 launch flow2one deploy.launch.py`) for --seconds

Scheduling (what --before / --compare select; docs/decisions.md, "Latency"):
  after   SingleThreadedExecutor per process, the policy infers on its own thread as each cloud arrives
          (within rate_hz), the executor re-targets franky as soon as a chunk is accepted (>= 20 ms apart)
  before  MultiThreadedExecutor, the policy infers in a timer callback (polls at >= 30 Hz), the executor
          re-targets only on its command tick

Examples:
  flow2one latency sim --compare --seconds 20       # the goal table: before vs after, sim graph, a re-plan per cloud
  flow2one latency probe --compare --repeats 3      # policy node + 30 Hz probe, 125 Hz cap, three runs each
  flow2one latency listen --seconds 60 --domain-id 0  # on the robot PC, while the deploy graph runs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flow2one.ros.latency_runs import compare, trace_listen, trace_probe, trace_sim
from flow2one.ros.trace import AFTER, BEFORE


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("graph", nargs="?", default="sim", choices=("sim", "probe", "listen"), help="graph to trace (default sim)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured time per run (sim: sim seconds per "
                   "episode; default 20)")
    p.add_argument("--rate-hz", type=float, default=None, help="policy re-plan cap (default: sim 30, above its 20 Hz "
                   "cameras, so every cloud is used; probe 125)")
    p.add_argument("--candidates", type=int, default=None, help="policy n_candidates (default: the graph's config; "
                   "probe 4)")
    p.add_argument("--task", default="reach_around", help="sim task (default reach_around)")
    p.add_argument("--model-dir", default=None, help="the policy's model (default: sim models/sim_student, probe a "
                   "small random student made once per command)")
    p.add_argument("--before", action="store_true", help="only the old scheduling")
    p.add_argument("--compare", action="store_true", help="old and current scheduling, alternating, in one run")
    p.add_argument("--repeats", type=int, default=1, help="runs of each scheduling (default 1)")
    p.add_argument("--domain-id", type=int, default=None, help="ROS domain (default: listen $ROS_DOMAIN_ID, "
                   "else 120 + pid %% 80, a private one)")
    p.add_argument("--out", type=Path, default=Path("outputs/latency"), help="latency.json + PNGs (default "
                   "outputs/latency)")


@contextlib.contextmanager
def _probe_model(args: argparse.Namespace) -> Iterator[Path]:
    """--model-dir, else a small random student in a temporary folder under --out (an export takes a while;
    the child runs' recorded commands then name it as a path of the output, not of this machine's /tmp)."""
    if args.model_dir:
        yield Path(args.model_dir)
        return
    from flow2one.bench.policy_graph_latency import small_student

    with tempfile.TemporaryDirectory(prefix="probe_student_", dir=args.out) as tmp:
        yield small_student(Path(tmp))


def run_once(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """One run in this process: figures + breakdown, its PNG in args.out."""
    from flow2one.bench.timing import MachineShare
    from flow2one.ros.trace import format_breakdown, plot

    sched = BEFORE if name == "before" else AFTER
    domain = args.domain_id if args.domain_id is not None else 120 + os.getpid() % 80
    share = MachineShare()
    if args.graph == "listen":
        res, rows = trace_listen(args.seconds,
                                 domain if args.domain_id is not None else int(os.environ.get("ROS_DOMAIN_ID", "0")))
    elif args.graph == "sim":
        res, rows = trace_sim(name, sched, Path(args.model_dir or "models/sim_student"), args.task, args.seconds,
                              domain, args.rate_hz, args.candidates)
    else:
        with _probe_model(args) as model:
            res, rows = trace_probe(name, sched, model, args.seconds, domain, args.rate_hz, args.candidates)
    res["machine"] = share.read()  # steal and load over the run: the host's part in the tails
    if rows:
        png = args.out / f"latency_{args.graph}_{name}.png"
        plot(rows, str(png), f"{args.graph} graph, {name} scheduling")
        res["plot"] = str(png)
    print(f"{name}:\n" + format_breakdown(res["trace"]), file=sys.stderr, flush=True)
    return res


def run_child(args: argparse.Namespace, name: str, out: Path) -> dict[str, Any]:
    """One run in a child process: a fresh process per run (its own franky-sim address, no threads or DDS
    participants left from the previous graph)."""
    cmd = [sys.executable, "-m", "flow2one.cli", "latency", args.graph, "--seconds", str(args.seconds),
           "--task", args.task, "--out", str(out)]
    cmd += ["--model-dir", str(args.model_dir)] if args.model_dir else []
    cmd += ["--before"] if name == "before" else []
    cmd += ["--rate-hz", str(args.rate_hz)] if args.rate_hz else []
    cmd += ["--candidates", str(args.candidates)] if args.candidates else []
    cmd += ["--domain-id", str(args.domain_id)] if args.domain_id is not None else []
    proc = subprocess.run(cmd, stdout=sys.stderr, check=False)  # its progress and JSON: our stderr
    if proc.returncode != 0 or not (out / "latency.json").is_file():
        return {"scheduling": name, "error": f"run failed with exit code {proc.returncode}"}
    return json.loads((out / "latency.json").read_text())["runs"][0]


def main(args: argparse.Namespace) -> int:
    if args.repeats < 1 or args.seconds <= 0:
        raise SystemExit("--repeats must be >= 1 and --seconds > 0")
    names = ["before", "after"] if args.compare else ["before"] if args.before else ["after"]
    if args.graph == "listen":
        if args.compare or args.before or args.repeats > 1:
            raise SystemExit("listen traces the graph as it runs: --compare, --before and --repeats do not apply")
        names = ["as running"]
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"command": "flow2one " + " ".join(sys.argv[1:]),
                              "utc": datetime.now(UTC).isoformat(timespec="seconds"), "graph": args.graph,
                              "load_avg_at_start": [round(x, 2) for x in os.getloadavg()], "runs": []}
    t0 = time.monotonic()
    if len(names) == 1 and args.repeats == 1:
        with contextlib.redirect_stdout(sys.stderr):  # the graph's progress lines: stdout is the JSON alone
            report["runs"].append(run_once(args, names[0]))
    else:
        with contextlib.ExitStack() as stack:
            if args.graph == "probe" and not args.model_dir:  # one model for every child
                args.model_dir = str(stack.enter_context(_probe_model(args)))
            for i in range(args.repeats):
                for name in names:  # alternating, so a change of the machine's load hits both alike
                    print(f"flow2one latency: {args.graph}, {name} scheduling, run {i + 1}/{args.repeats} ...",
                          file=sys.stderr, flush=True)
                    report["runs"].append(run_child(args, name, args.out / f"{name}_{i + 1}"))
    report["wall_s"] = round(time.monotonic() - t0, 1)
    if args.compare:
        report["comparison"] = compare(args.graph, report["runs"])
    text = json.dumps(report, indent=1, default=str)
    (args.out / "latency.json").write_text(text + "\n")
    print(text)
    return 0
