"""Simulated RGB-D cameras: render colour + metric depth from a snapshot of the sim state.

Rendering never touches the MjData that franky-sim is stepping: a snapshot (qpos, mocap poses, time)
taken in the sim thread is copied into a private MjData, so the physics thread is not stalled while
llvmpipe rasterises. Intrinsics follow from MuJoCo's vertical field of view (square pixels, centred
principal point) and extrinsics from the camera's pose, in the calibration format the real cameras use.
The robot is drawn with its collision meshes (geom group 3) instead of its visual meshes (group 2):
242k triangles -> a few thousand, 37 ms -> 3 ms per 160x120 image on llvmpipe, same silhouette.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import mujoco
import numpy as np

from flow2one.paths import data_root
from flow2one.perception.camera_model import CameraIntrinsics, CameraModel
from flow2one.sim.scene import TCP_SITE, CameraSpec

# calibration/sim.yaml under flow2one.paths.data_root() (the checkout, share/flow2one or FLOW2ONE_ROOT).
SIM_CALIBRATION = data_root() / "calibration" / "sim.yaml"
# MuJoCo cameras look along -z with y up; the optical frame (REP 103) looks along +z with y down.
_MJ_TO_OPTICAL = np.diag([1.0, -1.0, -1.0])


@dataclass
class Snapshot:
    """The part of the sim state that rendering needs, copied in the sim thread at one instant."""

    time: float  # sim seconds
    stamp_ns: int  # wall clock (ROS time) when the sim was in this state
    qpos: np.ndarray
    mocap_pos: np.ndarray
    mocap_quat: np.ndarray

    @classmethod
    def take(cls, data: mujoco.MjData, stamp_ns: int) -> Snapshot:
        return cls(float(data.time), stamp_ns, data.qpos.copy(), data.mocap_pos.copy(), data.mocap_quat.copy())


def intrinsics(spec: CameraSpec) -> CameraIntrinsics:
    fy = 0.5 * spec.height / np.tan(np.deg2rad(spec.fovy_deg) / 2)
    # Pixel centres at integer coordinates (ROS convention), so the image centre is (w-1)/2.
    return CameraIntrinsics(spec.width, spec.height, fy, fy, (spec.width - 1) / 2, (spec.height - 1) / 2)


def _pose(R: np.ndarray, p: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, p
    return T


def camera_models(model: mujoco.MjModel, data: mujoco.MjData, specs: tuple[CameraSpec, ...]) -> list[CameraModel]:
    """CameraModels of the sim cameras (data must be forwarded); wrist camera T is TCP -> optical."""
    tcp = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, TCP_SITE)
    T_base_tcp = _pose(data.site_xmat[tcp].reshape(3, 3), data.site_xpos[tcp])
    out = []
    for spec in specs:
        cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, spec.name)
        if cid < 0:
            raise ValueError(f"sim camera {spec.name!r} is not in the scene")
        T = _pose(data.cam_xmat[cid].reshape(3, 3) @ _MJ_TO_OPTICAL, data.cam_xpos[cid])
        if spec.mount == "ee":
            T = np.linalg.inv(T_base_tcp) @ T
            T[3] = (0, 0, 0, 1)
        out.append(CameraModel(spec.name, intrinsics(spec), T, mount=spec.mount, serial=""))
    return out


class SimCameras:
    """Renders every camera from snapshots. Create and use it in ONE thread (it owns GL contexts)."""

    def __init__(self, model: mujoco.MjModel, specs: tuple[CameraSpec, ...], visual_meshes: bool = False) -> None:
        # llvmpipe's own raster threads fight franky-sim's 1 kHz thread for the 2 cores (docs/ENVIRONMENT_FACTS.md)
        os.environ.setdefault("LP_NUM_THREADS", "1")
        self.model, self.specs = model, specs
        self._data = mujoco.MjData(model)
        for spec in specs:  # the offscreen buffer must hold the largest image
            model.vis.global_.offwidth = max(model.vis.global_.offwidth, spec.width)
            model.vis.global_.offheight = max(model.vis.global_.offheight, spec.height)
        self._option = mujoco.MjvOption()
        # objects + collision meshes (visual_meshes: the detailed ones instead, the slow baseline)
        self._option.geomgroup[:] = (1, 1, 1, 0, 0, 0) if visual_meshes else (1, 1, 0, 1, 0, 0)
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._depth_renderers: dict[tuple[int, int], mujoco.Renderer] = {}

    def _renderer(self, spec: CameraSpec, depth: bool) -> mujoco.Renderer:
        pool = self._depth_renderers if depth else self._renderers
        key = (spec.height, spec.width)
        if key not in pool:
            r = mujoco.Renderer(self.model, spec.height, spec.width)
            if depth:
                r.enable_depth_rendering()
            pool[key] = r
        return pool[key]

    def load(self, snap: Snapshot) -> mujoco.MjData:
        d = self._data
        d.qpos[:] = snap.qpos
        d.mocap_pos[:] = snap.mocap_pos
        d.mocap_quat[:] = snap.mocap_quat
        d.time = snap.time
        mujoco.mj_kinematics(self.model, d)
        mujoco.mj_camlight(self.model, d)
        return d

    def render(self, snap: Snapshot, rgb: bool = True, depth: bool = True
               ) -> tuple[list[np.ndarray | None], list[np.ndarray | None]]:
        """Per camera: rgb (h, w, 3) uint8 and depth (h, w) float32 metres (0 = no return)."""
        d = self.load(snap)
        rgbs: list[np.ndarray | None] = []
        depths: list[np.ndarray | None] = []
        for spec in self.specs:
            if rgb:
                r = self._renderer(spec, depth=False)
                r.update_scene(d, camera=spec.name, scene_option=self._option)
                rgbs.append(r.render().copy())
            else:
                rgbs.append(None)
            if depth:
                r = self._renderer(spec, depth=True)
                r.update_scene(d, camera=spec.name, scene_option=self._option)
                z = r.render().astype(np.float32)
                z[z > 0.99 * self.model.stat.extent * self.model.vis.map.zfar] = 0.0  # background: no return
                depths.append(z)
            else:
                depths.append(None)
        return rgbs, depths

    def warm_up(self, rgb: bool = True) -> None:
        """Create the GL contexts and draw once, from the model's initial state. The first render takes ~1.4 s
        on llvmpipe and holds the GIL for up to 0.25 s at a time on an idle machine: in the process of a serving
        franky-sim that stalls its 1 kHz loop towards libfranka's 1 s UDP timeout, which faults a running
        motion. Called before franky-sim serves, it costs no control cycle."""
        self.render(Snapshot.take(mujoco.MjData(self.model), 0), rgb=rgb)

    def close(self) -> None:
        for r in [*self._renderers.values(), *self._depth_renderers.values()]:
            r.close()
        self._renderers.clear()
        self._depth_renderers.clear()


class RenderLoop:
    """Renders every camera from a fresh snapshot at `rate_hz` in its own thread (it owns the GL
    contexts) and hands (snapshot, rgbs, depths) to `sink`. Never bursts to catch up: a late frame is
    worth less than the sim time the burst would steal."""

    def __init__(self, world, rate_hz: float, sink, rgb: bool = True) -> None:
        self.world, self.period, self.sink, self.rgb = world, 1.0 / rate_hz, sink, rgb
        self.frames = 0
        self.error = ""
        self._stop = threading.Event()
        self._ready = threading.Event()  # GL contexts made and one frame drawn (or failed)
        self._go = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-cameras", daemon=True)

    def prepare(self, timeout: float = 120.0) -> RenderLoop:
        """Warm the renderers up in the loop's thread (SimCameras.warm_up) and hold until start(): for
        SimWorld.start(before_serving=...), so that the first render never stalls a serving franky-sim."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the sim cameras did not draw a first frame within {timeout:.0f} s")
        if self.error:
            raise RuntimeError(f"the sim cameras failed: {self.error}")
        return self

    def start(self) -> RenderLoop:
        if self._thread.ident is None:  # not prepared: warm up and run at once
            self._thread.start()
        self._go.set()
        return self

    def _run(self) -> None:
        cams = SimCameras(self.world.model, self.world.config.cameras)
        try:
            cams.warm_up(rgb=self.rgb)
            self._ready.set()
            self._go.wait()
            next_t = time.monotonic()
            while not self._stop.is_set():
                snap = self.world.snapshot()
                rgbs, depths = cams.render(snap, rgb=self.rgb, depth=True)
                self.sink(snap, rgbs, depths)
                self.frames += 1
                next_t = max(next_t + self.period, time.monotonic())
                self._stop.wait(next_t - time.monotonic())
        except Exception as exc:  # noqa: BLE001 - kept for the owner's diagnostics
            if not self._stop.is_set():
                self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._ready.set()  # a failed warm-up ends prepare()'s wait with the error
            cams.close()

    def stop(self) -> None:
        self._stop.set()
        self._go.set()
        if self._thread.is_alive():
            self._thread.join(5.0)


def sim_cloud_crop(p: dict | None = None):
    """The crop of the sim graph's pointcloud node (`p`: its section of config/sim.yaml, read when None), which
    demos record and cards must match."""
    from flow2one.graph import load_params
    from flow2one.perception.crop import CloudCrop

    p = load_params("sim").get("pointcloud", {}) if p is None else p
    return CloudCrop.from_params(p, "config/sim.yaml pointcloud")


def make_cloud_pipeline(cameras: list[CameraModel], floor_z: float | None = None):
    """The CloudPipeline of the sim graph's pointcloud node (its section of config/sim.yaml: crop, voxel,
    seed), so demonstrations are made of exactly the clouds a policy sees when it runs in the sim graph.
    `floor_z`: the crop box's floor there instead (`sim-demos --wide-floor-z`), all else as the node's."""
    from flow2one.graph import load_params
    from flow2one.perception.cloud import CloudPipeline
    from flow2one.spec import N_POINTS

    p = load_params("sim").get("pointcloud", {})
    crop = sim_cloud_crop(p)
    if floor_z is not None:
        crop = crop.with_floor(floor_z)
    return CloudPipeline(cameras, crop.workspace_min, crop.workspace_max, crop.voxel_size,
                         n_points=p.get("n_points", N_POINTS), seed=p.get("seed", 0), pixel_stride=p.get("pixel_stride", 0))

