"""Repair episode bags that a crash, power loss or kill -9 left unfinished.

The recorder writes `episode_NNNNN.mcap.part` while an episode runs. Every complete chunk in it (all
but the last fraction of a second) is rewritten into a valid `episode_NNNNN.recovered.mcap` (or --out)
that `ros2 bag`, the mcap CLI and rosbags read; its metadata says recovered=true and success=unknown.
The input is only read, never deleted or rewritten. A truncated `.mcap` (copied off a full disk, say)
is repaired the same way; a complete one is left alone ("already complete"). The exit code is non-zero
when a file yielded nothing. The recorder node does this by itself at start-up (recover_on_start).

Examples:
  flow2one recover-bag demos/episode_00007.mcap.part
  flow2one recover-bag demos/                 # every .part file in the directory not yet recovered
  flow2one recover-bag copied/episode_00003.mcap --out fixed/episode_00003.mcap
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flow2one.data.bags import (
    PARTIAL_SUFFIX,
    BagAlreadyComplete,
    BagError,
    recover,
    recovered_path,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help=".mcap.part or truncated .mcap files, or directories to search for "
                                            ".mcap.part files")
    p.add_argument("--out", default=None, help="output file (one input only); default: X.recovered.mcap next to it")


def main(args: argparse.Namespace) -> int:
    files: list[Path] = []
    for p in map(Path, args.paths):
        if p.is_dir():
            files += [f for f in sorted(p.glob(f"*.mcap{PARTIAL_SUFFIX}")) if not recovered_path(f).exists()]
        elif p.exists():
            files.append(p)
        else:
            raise BagError(f"{p}: no such file or directory")
    if args.out and len(files) != 1:
        raise ValueError(f"--out needs exactly one input file, got {len(files)}")
    if not files:
        print("nothing to recover (no .mcap.part files that are not recovered yet)")
        return 0
    failed = 0
    for f in files:
        try:
            r = recover(f, args.out)
        except BagAlreadyComplete as exc:
            print(str(exc))
            continue
        except (BagError, FileExistsError, OSError) as exc:
            print(f"{f}: NOT recovered: {exc}", file=sys.stderr)
            failed += 1
            continue
        topics = ", ".join(f"{t} {n}" for t, n in sorted(r.topics.items()))
        print(f"{f} -> {r.path}: {r.messages} messages ({topics}); lost the last {r.lost_bytes} bytes; {r.reason}")
    return 1 if failed else 0
