"""Convert a directory of recorded MCAP episodes into the flow2one training dataset.

Each bag is validated on its own (missing topics, gaps, bad stamps, wrong cloud size); a bad bag is
reported and skipped while the others are still converted. Observations and actions are resampled on a
grid of spec.STEP_DT seconds: at grid time t the observation is the newest message stamped <= t
(cloud, EE pose, gripper width) and the action is the first command the executor sent at or after t,
i.e. what was commanded after that observation. Header stamps are used (the time the data describes),
not the recorder's receive time. A JSON report (convert_report.json) lists every bag's outcome.

Examples:
  flow2one convert demos/ data/teleop_push
  flow2one convert demos/ data/teleop_push --cameras front --image-size 160x120 --skip-failed
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flow2one import spec
from flow2one.data.convert_bags import ConvertConfig, convert_directory
from flow2one.data.profiles import load_profile


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bags", help="a bag (rosbag2 directory, .mcap or .db3 file) or a folder searched recursively "
                                "for them (our recorder's episode_*.mcap files, `ros2 bag record` directories)")
    p.add_argument("out", help="dataset directory to write episode_*.npz into")
    p.add_argument("--profile", default="flow2one",
                   help="topic profile: a shipped name (flow2one: our recorder's topics; realsense_franka: "
                        "realsense-ros + franka_ros2) or a YAML file of the same fields (config/topics/)")
    p.add_argument("--calibration", default="",
                   help="calibration file whose cameras build the cloud from depth when a bag has no cloud "
                        "(default: the profile's)")
    p.add_argument("--task", default="", help="task name of bags without our episode metadata (overrides theirs)")
    p.add_argument("--success", choices=("true", "false", "unknown"), default="unknown",
                   help="outcome of bags without our episode metadata (true/false override our own bags' too)")
    p.add_argument("--append", action="store_true", help="add to an existing dataset instead of refusing")
    p.add_argument("--dt", type=float, default=spec.STEP_DT, help="grid step in seconds")
    p.add_argument("--max-gap", type=float, default=0.5, help="seconds of silence on a topic that fail a bag")
    p.add_argument("--cameras", default="", help="comma-separated camera names whose rgb+depth to include (and, "
                                                 "for bags without a cloud, the calibration's cameras to build it from)")
    p.add_argument("--image-size", default="", metavar="WxH", help="resize included images, e.g. 160x120")
    p.add_argument("--skip-failed", action="store_true", help="leave out episodes marked unsuccessful")


def main(args: argparse.Namespace) -> int:
    size = None
    if args.image_size:
        try:
            w, h = (int(v) for v in args.image_size.lower().split("x"))
            size = (w, h)
        except ValueError:
            raise ValueError(f"--image-size expects WxH, e.g. 160x120, got {args.image_size!r}") from None
    if not args.dt > 0 or not args.max_gap > 0:
        raise ValueError(f"--dt ({args.dt}) and --max-gap ({args.max_gap}) must be > 0")
    cfg = ConvertConfig(dt=args.dt, max_gap_s=args.max_gap, skip_failed=args.skip_failed, image_size=size,
                        cameras=tuple(c for c in args.cameras.split(",") if c), profile=load_profile(args.profile),
                        calibration=args.calibration, task=args.task,
                        success={"true": True, "false": False, "unknown": None}[args.success])
    reports = convert_directory(args.bags, args.out, cfg, append=args.append)
    for r in reports:
        line = f"{r.bag}: {r.status}"
        line += f" -> {r.episode} ({r.steps} steps, {r.duration_s:.1f} s)" if r.episode else ""
        print(line + "".join(f"\n    error: {e}" for e in r.errors) + "".join(f"\n    warning: {w}" for w in r.warnings))
    failed = sum(r.status == "failed" for r in reports)
    print(f"{sum(r.status == 'converted' for r in reports)} converted, {failed} failed, "
          f"{sum(r.status == 'skipped' for r in reports)} skipped; report: {Path(args.out) / 'convert_report.json'}")
    return 1 if failed else 0
