"""Calibrate a camera's extrinsics from ChArUco board images (and robot poses) and update calibration/*.yaml.

Modes:
  fixed-board   the board lies at a known base-frame pose (--board-pose); external camera -> T_base_camera
  eye-to-hand   the gripper holds the board, the camera is fixed; needs --poses  -> T_base_camera (mount base)
  eye-in-hand   the board is fixed, the wrist camera moves; needs --poses        -> T_ee_camera (mount ee)

--images is a folder of PNG/JPG color images from the camera; --poses a YAML mapping each image file name
to the robot's T_base_ee when it was taken (a 4x4 matrix or {xyz: [3], quat_xyzw: [4]}). Intrinsics are
the camera's entry in --calibration (RealSense factory values). See calibration/README.md.

Examples:
  flow2one calibrate --board-image board.png                        # print this, measure the square size
  flow2one calibrate --calibration calibration/lab_d435.yaml --camera front --mode eye-to-hand \\
      --images calib/front --poses calib/front/poses.yaml --write
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import yaml

from flow2one.paths import resolve as resolve_path
from flow2one.perception.calibrate import MAX_SPREAD_DEG, MAX_SPREAD_M, MODES, calibrate, parse_pose
from flow2one.perception.calibration import load_cameras, save_cameras
from flow2one.perception.camera_model import CameraModel
from flow2one.perception.charuco import HAND_EYE_METHODS, BoardSpec


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calibration", default="calibration/lab_d435.yaml", help="calibration file (intrinsics in, T out)")
    p.add_argument("--camera", help="camera name in the calibration file")
    p.add_argument("--mode", choices=MODES, default="eye-to-hand")
    p.add_argument("--images", help="folder of color images (.png/.jpg) of the board")
    p.add_argument("--poses", help="YAML: image file name -> robot T_base_ee (4x4 or {xyz, quat_xyzw})")
    p.add_argument("--board-pose", help="fixed-board: board pose in base 'x y z qx qy qz qw' or a YAML file")
    p.add_argument("--method", choices=sorted(HAND_EYE_METHODS), default="park", help="cv2.calibrateHandEye method")
    p.add_argument("--squares-x", type=int, default=BoardSpec.squares_x)
    p.add_argument("--squares-y", type=int, default=BoardSpec.squares_y)
    p.add_argument("--square", type=float, default=BoardSpec.square, help="square side in metres, as printed")
    p.add_argument("--marker", type=float, default=BoardSpec.marker, help="marker side in metres, as printed")
    p.add_argument("--dictionary", default=BoardSpec.dictionary)
    p.add_argument("--board-image", metavar="PNG", help="write the printable board image and exit")
    p.add_argument("--write", action="store_true", help="store the result in the calibration file (only if its "
                   "spread is within --max-spread-m and --max-spread-deg)")
    p.add_argument("--max-spread-m", type=float, default=MAX_SPREAD_M,
                   help="largest position spread of the pose that must be constant across views for --write; a "
                        "wrong board scale (--square/--marker) shows up here")
    p.add_argument("--max-spread-deg", type=float, default=MAX_SPREAD_DEG,
                   help="largest rotation spread (degrees) for --write")


def main(args: argparse.Namespace) -> int:
    spec = BoardSpec(args.squares_x, args.squares_y, args.square, args.marker, args.dictionary)
    if args.board_image:
        cv2.imwrite(args.board_image, spec.image(200))
        print(f"wrote {args.board_image}: print at {spec.size[0] * 100:.1f} x {spec.size[1] * 100:.1f} cm "
              f"({args.square * 100:.1f} cm squares) or pass the measured --square/--marker")
        return 0
    if not (args.camera and args.images):
        raise SystemExit("--camera and --images are required (or --board-image)")
    cams = load_cameras(args.calibration)
    by_name = {c.name: c for c in cams}
    if args.camera not in by_name:
        raise SystemExit(f"camera {args.camera!r} is not in {args.calibration} (has {sorted(by_name)})")
    cam = by_name[args.camera]
    if not Path(args.images).is_dir():
        raise FileNotFoundError(f"--images {args.images}: no such folder")
    files = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"no .png/.jpg images in {args.images}")
    images = {}
    for f in files:
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"cannot read image {f}")
        images[f.name] = bgr[..., ::-1]
    poses = None
    if args.poses:
        raw = yaml.safe_load(Path(args.poses).read_text()) or {}
        poses = {str(k): parse_pose(v, f"{args.poses}:{k}") for k, v in raw.items()}
    board_pose = None
    if args.board_pose:
        path = Path(args.board_pose)
        board_pose = parse_pose(yaml.safe_load(path.read_text()) if path.exists() else args.board_pose, "--board-pose")
    T, report = calibrate(args.mode, images, cam.intrinsics, spec, poses, board_pose, args.method)
    mount = "ee" if args.mode == "eye-in-hand" else "base"
    report.update(camera=cam.name, mount=mount, T=T.round(6).tolist())
    print(json.dumps(report, indent=2))
    if report["spread_m"] > args.max_spread_m or report["spread_deg"] > args.max_spread_deg:
        raise ValueError(f"calibration not {'written' if args.write else 'usable'}: spread {report['spread_m']:.4f} m / "
                         f"{report['spread_deg']:.2f} deg is above --max-spread-m {args.max_spread_m} / "
                         f"--max-spread-deg {args.max_spread_deg} (check --square/--marker against the printed board, "
                         "and --poses)")
    if args.write:
        new = CameraModel(cam.name, cam.intrinsics, T, mount, cam.serial)
        save_cameras(resolve_path(args.calibration), [new if c.name == cam.name else c for c in cams])
        print(f"updated camera {cam.name} in {resolve_path(args.calibration)}")
    return 0
