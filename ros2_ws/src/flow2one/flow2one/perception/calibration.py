"""Calibration files (calibration/*.yaml): per-camera intrinsics + extrinsics, the format of CONTRACTS.md.

One file describes every camera of a setup (real or sim), so the point-cloud node, the bag converter
and the sim read the same thing. Loading validates everything and names the offending camera/field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from flow2one.paths import resolve
from flow2one.perception.camera_model import CameraIntrinsics, CameraModel
from flow2one.spec import BASE_FRAME
from flow2one.yamlio import load_yaml

_INTRINSIC_KEYS = ("width", "height", "fx", "fy", "cx", "cy")


def _intrinsics(name: str, d: Any) -> CameraIntrinsics:
    if not isinstance(d, dict):
        raise ValueError(f"camera {name}: 'intrinsics' must be a mapping")
    missing = [k for k in _INTRINSIC_KEYS if k not in d]
    if missing:
        raise ValueError(f"camera {name}: intrinsics lack {missing}")
    try:
        return CameraIntrinsics(
            int(d["width"]), int(d["height"]), float(d["fx"]), float(d["fy"]), float(d["cx"]), float(d["cy"]),
            distortion_model=str(d.get("distortion_model", "plumb_bob")),
            distortion=tuple(float(x) for x in d.get("distortion", (0.0,) * 5)),
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"camera {name}: bad intrinsics: {exc}") from exc


def cameras_from_dict(data: Any, source: str = "<dict>") -> list[CameraModel]:
    """Parse the calibration mapping; raises ValueError naming the problem and its source."""
    if not isinstance(data, dict) or not isinstance(data.get("cameras"), list) or not data["cameras"]:
        raise ValueError(f"{source}: expected a mapping with a non-empty 'cameras' list")
    base = data.get("base_frame", BASE_FRAME)
    if base != BASE_FRAME:
        raise ValueError(f"{source}: base_frame is {base!r}, this stack uses {BASE_FRAME!r}")
    cams: list[CameraModel] = []
    for i, c in enumerate(data["cameras"]):
        if not isinstance(c, dict) or not c.get("name"):
            raise ValueError(f"{source}: camera #{i} needs a 'name'")
        name = str(c["name"])
        T = np.asarray(c.get("T", np.eye(4)), dtype=np.float64)
        try:
            cams.append(CameraModel(name=name, intrinsics=_intrinsics(name, c.get("intrinsics")), T_base_camera=T,
                                    mount=str(c.get("mount", "base")), serial=str(c.get("serial", "") or "")))
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from exc
    names = [c.name for c in cams]
    if len(set(names)) != len(names):
        raise ValueError(f"{source}: duplicate camera names {names}")
    return cams


def cameras_to_dict(cameras: list[CameraModel]) -> dict:
    out = []
    for c in cameras:
        k = c.intrinsics
        out.append({
            "name": str(c.name),
            "serial": str(c.serial),
            "mount": str(c.mount),
            "intrinsics": {"width": int(k.width), "height": int(k.height), "fx": float(k.fx), "fy": float(k.fy),
                           "cx": float(k.cx), "cy": float(k.cy),
                           "distortion_model": str(k.distortion_model), "distortion": [float(x) for x in k.distortion]},
            "T": [[float(x) for x in row] for row in np.asarray(c.T_base_camera)],
        })
    return {"base_frame": BASE_FRAME, "cameras": out}


def select_cameras(cameras: list[CameraModel], names: str, source: str = "calibration") -> list[CameraModel]:
    """The cameras named in comma-separated `names` ("" = all), in file order; unknown names are an error."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = sorted(set(wanted) - {c.name for c in cameras})
    if unknown:
        raise ValueError(f"cameras {unknown} are not in {source} (it has {[c.name for c in cameras]})")
    return [c for c in cameras if not wanted or c.name in wanted]


def load_cameras(path: str | Path) -> list[CameraModel]:
    p = resolve(path)
    return cameras_from_dict(load_yaml(p, "calibration file", mapping=False), str(p))


def save_cameras(path: str | Path, cameras: list[CameraModel]) -> None:
    """Write atomically (temp file + rename) so a crash never leaves a half-written calibration."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(cameras_to_dict(cameras), sort_keys=False, default_flow_style=None))
    tmp.replace(p)
