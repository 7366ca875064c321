"""Sim world node: franky-sim (the robot the executor connects to) + simulated RGB-D cameras + task logic.

Publishes each camera exactly like the RealSense camera node (rgb8 color, aligned depth 16UC1 mm or
32FC1 m, CameraInfo, realsense-ros topic names, `<name>_color_optical_frame`), so everything downstream
runs unchanged. Images are stamped with the wall-clock (ROS) time at which the sim was in the rendered
state (the snapshot instant), the same clock the executor stamps robot states with; rendering and
publishing latency therefore shows up as camera latency, as it would on hardware.
Subscribes spec.SIM_RESET_TOPIC (Int64 seed) and publishes spec.SIM_STATUS_TOPIC (JSON String).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Int64, String

from flow2one import spec
from flow2one.ros.convert import intrinsics_to_camera_info, numpy_to_image
from flow2one.ros.diagnostics import ERROR, OK, WARN, Diagnostics
from flow2one.ros.params import declare_params
from flow2one.ros.qos import LATCHED_QOS, SENSOR_QOS
from flow2one.ros.runner import run_node_main
from flow2one.sim.tasks import TASKS


@dataclass(frozen=True)
class SimWorldParams:
    task: str = "reach_around"  # reach_around | pick_place | track | pop_up
    seed: int = 0  # seed of the episode set up at start (later ones come on the reset topic)
    camera_rate_hz: float = 15.0  # all cameras rendered from one snapshot per tick
    width: int = 160
    height: int = 120
    publish_color: bool = True
    depth_encoding: str = "16UC1"  # 16UC1 millimetres (the D400 default) | 32FC1 metres
    status_rate_hz: float = 5.0
    realtime: float = 1.0  # sim seconds per wall-clock second, held to the wall clock (the other nodes' time)
    host: str = "127.0.0.1"  # where the executor's robot_host must point; "" = first free 127.x.y.z

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {self.task!r}")
        if not (0 < self.camera_rate_hz <= 60 and 0 < self.status_rate_hz <= 100):
            raise ValueError("camera_rate_hz must be in (0, 60] and status_rate_hz in (0, 100]")
        if self.width < 16 or self.height < 16:
            raise ValueError(f"image size {self.width}x{self.height} is too small")
        if self.depth_encoding not in ("16UC1", "32FC1"):
            raise ValueError(f"depth_encoding must be 16UC1 or 32FC1, got {self.depth_encoding!r}")
        if self.realtime <= 0:
            raise ValueError("realtime must be > 0")


class SimWorldNode(Node):
    PARAMS = SimWorldParams  # checked by the runner before any node starts

    def __init__(self, node_name: str = "sim_world", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.p = declare_params(self, self.PARAMS)
        self.diag = Diagnostics(self, hardware_id="franky-sim")
        from flow2one.sim.cameras import RenderLoop, intrinsics
        from flow2one.sim.scene import default_cameras
        from flow2one.sim.world import SimWorld, WorldConfig

        self.world = SimWorld(WorldConfig(task=self.p.task, cameras=default_cameras(self.p.width, self.p.height),
                                          realtime=self.p.realtime, wall_clock=True, host=self.p.host))
        self.cameras = RenderLoop(self.world, self.p.camera_rate_hz, self._publish_frames, rgb=self.p.publish_color)
        self.world.start(before_serving=self.cameras.prepare)
        self._pubs = {}
        for cam in self.world.config.cameras:
            t = spec.camera_topics(cam.name)
            self._pubs[cam.name] = (self.create_publisher(Image, t["color"], SENSOR_QOS),
                                    self.create_publisher(CameraInfo, t["color_info"], SENSOR_QOS),
                                    self.create_publisher(Image, t["depth"], SENSOR_QOS),
                                    self.create_publisher(CameraInfo, t["depth_info"], SENSOR_QOS))
        self._status_pub = self.create_publisher(String, spec.SIM_STATUS_TOPIC, LATCHED_QOS)
        self.create_subscription(Int64, spec.SIM_RESET_TOPIC, self._on_reset, 10)
        self.world.reset(self.p.seed)
        self._intr = {c.name: intrinsics(c) for c in self.world.config.cameras}
        self._rate = (time.monotonic(), self.world.sim_time, 0)  # for RTF / fps in diagnostics
        self.cameras.start()
        self.create_timer(1.0 / self.p.status_rate_hz, self._publish_status)
        self.create_timer(1.0, self._update_diagnostics)
        self.get_logger().info(f"franky-sim serving the FR3 on {self.world.hostname}; task {self.p.task}")

    # --- task ---------------------------------------------------------------------------------------
    def _on_reset(self, msg: Int64) -> None:
        self.world.reset(int(msg.data))
        self._publish_status()

    def _publish_status(self) -> None:
        st = self.world.status()
        self._status_pub.publish(String(data=json.dumps({
            "episode": st.episode, "seed": st.seed, "task": st.task, "success": st.success, "mode": st.mode,
            "mode_name": st.mode_name, "failed": st.failed, "t": round(st.t, 3),
            "time_to_success": st.success_time, "reason": st.reason})))

    # --- cameras (RenderLoop thread) -----------------------------------------------------------------
    def _publish_frames(self, snap, rgbs, depths) -> None:
        for cam, rgb, depth in zip(self.world.config.cameras, rgbs, depths):
            self._publish_camera(cam.name, self._intr[cam.name], rgb, depth, snap.stamp_ns)

    def _publish_camera(self, name: str, intr, rgb: np.ndarray | None, depth: np.ndarray, stamp_ns: int) -> None:
        color_pub, color_info_pub, depth_pub, depth_info_pub = self._pubs[name]
        frame_id = f"{name}_color_optical_frame"
        if rgb is not None:
            color_pub.publish(numpy_to_image(rgb, "rgb8", stamp_ns, frame_id))
            color_info_pub.publish(intrinsics_to_camera_info(intr, stamp_ns, frame_id))
        if self.p.depth_encoding == "16UC1":
            depth_msg = numpy_to_image(np.clip(np.rint(depth * 1000.0), 0, 65535).astype(np.uint16), "16UC1",
                                       stamp_ns, frame_id)
        else:
            depth_msg = numpy_to_image(depth.astype(np.float32), "32FC1", stamp_ns, frame_id)
        depth_pub.publish(depth_msg)
        depth_info_pub.publish(intrinsics_to_camera_info(intr, stamp_ns, frame_id))

    def _update_diagnostics(self) -> None:
        now, sim_t, frames = time.monotonic(), self.world.sim_time, self.cameras.frames
        w0, s0, f0 = self._rate
        self._rate = (now, sim_t, frames)
        rtf, fps = (sim_t - s0) / max(now - w0, 1e-9), (frames - f0) / max(now - w0, 1e-9)
        if self.cameras.error or not self.world.running:
            level, message = ERROR, self.cameras.error or "franky-sim server stopped"
        elif rtf < 0.5:
            level, message = WARN, f"sim real-time factor {rtf:.2f}: the machine is overloaded"
        else:
            level, message = OK, "running"
        self.diag.set(level, message, real_time_factor=rtf, camera_fps=fps, task=self.p.task,
                      episode=self.world.status().episode, hostname=self.world.hostname)

    def close(self) -> None:
        self.cameras.stop()
        self.world.close()


def main(args=None) -> None:
    run_node_main("sim_world", args)
