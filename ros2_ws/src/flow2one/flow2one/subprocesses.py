"""Child processes (franky-sim, the sim world, bag writers in tests): never outliving the parent, stopped cleanly."""

from __future__ import annotations

import ctypes
import signal
import subprocess


def die_with_parent() -> None:
    """Linux `preexec_fn`: the child gets SIGTERM when its parent dies (a crashed run must not leave a
    simulator bound to its address)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Ask a child to end with `sig` (it cleans up), SIGKILL it after `timeout`; no-op if it has ended."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
