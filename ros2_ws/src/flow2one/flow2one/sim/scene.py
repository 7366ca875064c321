"""The sim scene: franky-sim's MuJoCo FR3 on a table, a TCP site, RGB-D cameras and a task's objects.

franky-sim builds its MJCF as an ElementTree; we extend it between `add_robot()` and server start (the
only window franky-sim allows). The robot base sits at the world origin on the table top (z = 0), so
the MuJoCo world frame IS the robot base frame (spec.BASE_FRAME) and no transform is ever needed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

# Standard Panda/FR3 "ready" pose: TCP at (0.307, 0, 0.487), gripper pointing down.
HOME_Q: tuple[float, ...] = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)
ROBOT_PREFIX = "robot0_"
HAND_BODY = ROBOT_PREFIX + "hand"
TCP_SITE = "tcp"
# franky's default end effector (F_T_EE): 0.1034 m past the flange, which is the hand body's origin.
TCP_IN_HAND = (0.0, 0.0, 0.1034)
TABLE_TOP_Z = 0.0


@dataclass(frozen=True)
class CameraSpec:
    """A sim camera: where it is and what it looks at (in `parent` body coordinates), and its image."""

    name: str
    pos: tuple[float, float, float]
    target: tuple[float, float, float]
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    fovy_deg: float = 55.0
    width: int = 160
    height: int = 120
    parent: str = ""  # "" = fixed in the world (mount base); HAND_BODY = wrist camera (mount ee)

    @property
    def mount(self) -> str:
        return "ee" if self.parent else "base"


def default_cameras(width: int = 160, height: int = 120) -> tuple[CameraSpec, ...]:
    """One external camera facing the robot across the table and one wrist camera (D405-like)."""
    return (
        CameraSpec("front", pos=(1.0, -0.3, 0.55), target=(0.45, 0.0, 0.1), fovy_deg=55.0,
                   width=width, height=height),
        # In hand coordinates: z points along the fingers, the camera sits beside the fingers' base and
        # looks slightly inwards so the fingertips and what lies between them stay in view.
        CameraSpec("wrist", pos=(0.065, 0.0, 0.05), target=(0.0, 0.0, 0.25), up=(-1.0, 0.0, 0.0),
                   fovy_deg=58.0, width=width, height=height, parent=HAND_BODY),
    )


def lookat_xyaxes(pos, target, up) -> np.ndarray:
    """MuJoCo camera axes (x right, y up; it looks along -z) for a camera at `pos` looking at `target`."""
    f = np.asarray(target, float) - np.asarray(pos, float)
    f /= np.linalg.norm(f)
    x = np.cross(f, np.asarray(up, float))
    if np.linalg.norm(x) < 1e-6:
        raise ValueError(f"camera up vector {up} is parallel to its viewing direction")
    x /= np.linalg.norm(x)
    y = np.cross(-f, x)
    return np.concatenate([x, y])


def _fmt(v) -> str:
    return " ".join(f"{float(x):.6g}" for x in v)


def build_scene(sim, cameras: tuple[CameraSpec, ...]) -> None:
    """Add floor, table, TCP site, cameras and fast-render settings to a MujocoSimulator after add_robot()."""
    world = sim.worldbody
    ground = world.find("geom[@name='ground']")
    if ground is not None:  # the robot stands on a 0.75 m table; the checker floor goes below it
        ground.set("pos", "0 0 -0.75")
    quality = sim.scene.find("visual/quality")
    if quality is not None:  # docs/ENVIRONMENT_FACTS.md: 3 fps -> 16-19 fps at 640x480 on llvmpipe
        quality.set("shadowsize", "0")
        quality.set("offsamples", "0")
    for light in world.findall("light"):
        light.set("castshadow", "false")
    ET.SubElement(world, "geom", name="table", type="box", pos=f"0.35 0 {TABLE_TOP_Z - 0.02}",
                  size="0.6 0.6 0.02", rgba="0.55 0.45 0.35 1", friction="1 0.005 0.0001")
    hand = world.find(f".//body[@name='{HAND_BODY}']")
    if hand is None:
        raise RuntimeError(f"franky-sim scene has no body {HAND_BODY!r}; call sim.add_robot() first")
    ET.SubElement(hand, "site", name=TCP_SITE, pos=_fmt(TCP_IN_HAND), size="0.005", group="4")
    for cam in cameras:
        parent = world if not cam.parent else world.find(f".//body[@name='{cam.parent}']")
        if parent is None:
            raise ValueError(f"camera {cam.name}: unknown parent body {cam.parent!r}")
        ET.SubElement(parent, "camera", name=cam.name, pos=_fmt(cam.pos),
                      xyaxes=_fmt(lookat_xyaxes(cam.pos, cam.target, cam.up)), fovy=f"{cam.fovy_deg:.6g}")
