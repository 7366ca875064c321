"""franky-sim as a child process on its own loopback address: the stand-in robot for tests and benchmarks.

A separate process (not a thread) keeps the simulator's 1 kHz loop off this process's GIL, as the real
robot is off it; each instance binds a distinct 127.x.y.z so parallel runs never share a robot.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from flow2one.subprocesses import die_with_parent


def free_loopback_address() -> str:
    pid = os.getpid()
    return f"127.{50 + pid % 150}.{(pid // 150) % 250}.{1 + (time.monotonic_ns() // 1000) % 250}"


class FrankySimProcess:
    """`franky-sim -s mujoco` bound to `host` (robot :1337, gripper :1338); a context manager."""

    def __init__(self, host: str | None = None, start_timeout: float = 60.0) -> None:
        self.host = host or free_loopback_address()
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
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "FrankySimProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
