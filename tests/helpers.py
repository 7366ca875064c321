"""Helpers shared by tests (import as `from tests.helpers import wait_for`)."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable

# Domain ids 1..200, offset by pid so parallel pytest processes on one machine do not meet.
_domains = itertools.count((os.getpid() * 7) % 200)


def next_domain_id() -> int:
    return 1 + next(_domains) % 200


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, period: float = 0.02) -> bool:
    """Poll `cond` until true or `timeout` seconds pass; returns the last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(period)
    return cond()
