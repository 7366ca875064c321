"""Helpers shared by tests (import as `from tests.helpers import wait_for`)."""

from __future__ import annotations

import fcntl
import itertools
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

# Test ROS domains 1..200 in 25 blocks of 8. Each pytest process locks one block (flock: released when the
# process ends, even when killed) and cycles through it, so concurrent test runs on one machine never
# share a domain (pid-offset counters could overlap). Benchmarks use 201..230.
_BLOCK, _N_BLOCKS = 8, 25
_domains: Iterator[int] | None = None
_lock_file = None


def _claim_block() -> Iterator[int]:
    global _lock_file
    lock_dir = Path(tempfile.gettempdir()) / "flow2one-test-ros-domains"
    lock_dir.mkdir(exist_ok=True)
    for k in range(_N_BLOCKS):
        block = (os.getpid() + k) % _N_BLOCKS
        f = open(lock_dir / f"block{block}.lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        _lock_file = f  # held for the life of this process
        return itertools.cycle(range(1 + block * _BLOCK, 1 + (block + 1) * _BLOCK))
    raise RuntimeError(f"all {_N_BLOCKS} blocks of test ROS domain ids are locked by other test processes "
                       f"(see {lock_dir})")


def next_domain_id() -> int:
    """A ROS_DOMAIN_ID no other process's tests use right now."""
    global _domains
    if _domains is None:
        _domains = _claim_block()
    return next(_domains)


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, period: float = 0.02) -> bool:
    """Poll `cond` until true or `timeout` seconds pass; returns the last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(period)
    return cond()
