"""Child processes that never outlive their parent (franky-sim, sim world, bag writers in tests)."""

from __future__ import annotations

import ctypes
import signal


def die_with_parent() -> None:
    """Linux `preexec_fn`: the child gets SIGTERM when its parent dies (a crashed run must not leave a
    simulator bound to its address)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
