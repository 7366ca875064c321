"""franky-sim as a child process on its own loopback address: the stand-in robot for tests and benchmarks.

A separate process (not a thread) keeps the simulator's 1 kHz loop off this process's GIL, as the real
robot is off it; each instance binds a distinct 127.x.y.z so parallel runs never share a robot.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from flow2one.subprocesses import die_with_parent, stop


def free_loopback_host() -> str:
    """A 127.0.x.1 address whose franky-sim ports (1337 robot, 1338 gripper) are free, so a simulator
    never meets another one running on this machine (a test, the demo, a second user)."""
    start = os.getpid() % 200
    for i in range(200):
        host = f"127.0.{(start + i) % 200 + 20}.1"
        try:
            for port in (1337, 1338):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind((host, port))
            return host
        except OSError:
            continue
    raise RuntimeError("no free loopback address for franky-sim (ports 1337/1338 busy on 127.0.20-219.1)")


class FrankySimProcess:
    """`franky-sim -s mujoco` bound to `host` (robot :1337, gripper :1338); a context manager."""

    def __init__(self, host: str | None = None, start_timeout: float = 60.0) -> None:
        self.host = host or free_loopback_host()
        exe = Path(sys.executable).parent / "franky-sim"
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([str(exe), "-s", "mujoco", "--hostname", self.host], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env, preexec_fn=die_with_parent)
        lines: list[str] = []
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            lines.append(line)
            if "Connect to the server" in line:
                break
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"franky-sim exited with {self.proc.returncode}: {''.join(lines)}")
        else:
            self.close()
            raise RuntimeError(f"franky-sim did not start within {start_timeout} s: {''.join(lines)}")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # drain its output

    def close(self) -> None:
        stop(self.proc)

    def __enter__(self) -> FrankySimProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
