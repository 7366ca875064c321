"""Writing a file so that a reader never sees it half-written."""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Write beside `path`, then rename over it. The temporary name carries the process id, so two processes
    writing the same file (reproduce's second process and its timings) never share one."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
