"""Some of a graph's nodes in a child process (`flow2one run GRAPH --nodes ...`), as launch starts them.

The sim world steps franky-sim's 1 kHz loop in Python: sharing a GIL with the policy and the point-cloud
node starves it (real-time factor 0.02-0.08 on a 2-core box against 0.8 alone), so the demo and the sim
tests give it a process of its own, the way the robot is its own machine. The demo does the same for the
point-cloud node (`flow2one run --own-process`). This module imports no rclpy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from flow2one.subprocesses import die_with_parent, stop


class NodeProcess:
    """Context manager: `nodes` of `graph_name` in a child process, ready once their constructors ran."""

    def __init__(self, graph_name: str, nodes: Iterable[str], overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 domain_id: int | None = None, start_timeout: float = 120.0,
                 params_files: Iterable[str] = ()) -> None:
        self.nodes = list(nodes)
        cmd = [sys.executable, "-m", "flow2one.cli", "run", graph_name, "--nodes", ",".join(self.nodes)]
        for f in params_files:
            cmd += ["--params-file", str(f)]
        for node, params in (overrides or {}).items():
            for key, value in params.items():
                cmd += ["--set", f"{node}.{key}={json.dumps(value)}"]  # JSON is YAML: types survive
        if domain_id is not None:
            cmd += ["--domain-id", str(domain_id)]
        self.cmd = cmd
        self.start_timeout = start_timeout
        self.output: deque[str] = deque(maxlen=60)  # the child's last lines, for error messages
        self.proc: subprocess.Popen | None = None

    def start(self) -> NodeProcess:
        # A process group of its own: Ctrl-C in a terminal reaches only this process, which stops its nodes
        # first (the executor's franky connection) and then the child (the franky-sim server it talks to);
        # both at once left libfranka reading from a closed socket (a segfault in 2 of 4 stops).
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=dict(os.environ, OMP_NUM_THREADS="1"), preexec_fn=die_with_parent,
                                     process_group=0)
        ready = threading.Event()

        def drain() -> None:
            for line in self.proc.stdout:
                self.output.append(line.rstrip())
                if line.startswith("running graph"):  # `flow2one run` prints it once every node is constructed
                    ready.set()

        threading.Thread(target=drain, name="node-process-output", daemon=True).start()
        deadline = time.monotonic() + self.start_timeout
        while not ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                why = (f"exited with {self.proc.returncode}" if self.proc.poll() is not None
                       else f"did not start within {self.start_timeout:.0f} s")
                self.close()
                raise RuntimeError(f"nodes {self.nodes} {why}:\n" + "\n".join(self.output))
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self, timeout: float = 15.0) -> None:
        """SIGINT (the nodes close cleanly, like Ctrl-C under launch), then SIGKILL after `timeout`."""
        if self.proc is not None:
            stop(self.proc, signal.SIGINT, timeout)

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
