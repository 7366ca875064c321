"""Repair episode bags that a crash, power loss or kill -9 left unfinished.

The recorder writes `episode_NNNNN.mcap.part` while an episode runs. Every complete chunk in it (all
but the last fraction of a second) is rewritten into a valid `episode_NNNNN.mcap` that `ros2 bag`,
the mcap CLI and rosbags read; its metadata says recovered=true and success=unknown. The recorder node
does this by itself at start-up (recover_on_start); this command is for doing it by hand.

Examples:
  flow2one recover-bag demos/episode_00007.mcap.part
  flow2one recover-bag demos/                 # every .part file in the directory
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flow2one.data.bags import PARTIAL_SUFFIX, BagError, recover


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help=".mcap.part files, or directories to search for them")
    p.add_argument("--keep", action="store_true", help="keep the .part file after a successful recovery")


def main(args: argparse.Namespace) -> int:
    files: list[Path] = []
    for p in map(Path, args.paths):
        files += sorted(p.glob(f"*.mcap{PARTIAL_SUFFIX}")) if p.is_dir() else [p]
    if not files:
        print("nothing to recover")
        return 0
    failed = 0
    for f in files:
        try:
            r = recover(f, keep_partial=args.keep)
        except (BagError, ValueError, FileExistsError, OSError) as exc:
            print(f"{f}: NOT recovered: {exc}")
            failed += 1
            continue
        topics = ", ".join(f"{t} {n}" for t, n in sorted(r.topics.items()))
        print(f"{f} -> {r.path}: {r.messages} messages ({topics}); lost the last {r.lost_bytes} bytes; {r.reason}")
    return 1 if failed else 0
