"""A RealSense made of numpy frames: librealsense's `software_device` with a D435-like depth + color pair.

Frames injected here go through the real librealsense machinery (frame matching, filters, alignment,
point cloud), so the capture core is exercised without hardware: tests use it, and it can replay
recorded frames through the same processing.
"""

from __future__ import annotations

import numpy as np
import pyrealsense2 as rs

from flow2one.perception.camera_model import CameraIntrinsics


def _rs_intrinsics(k: CameraIntrinsics) -> rs.intrinsics:
    i = rs.intrinsics()
    i.width, i.height, i.fx, i.fy, i.ppx, i.ppy = k.width, k.height, k.fx, k.fy, k.cx, k.cy
    i.model, i.coeffs = rs.distortion.none, [0.0] * 5
    return i


class SoftwareRealSense:
    """Depth (z16) + color (rgb8) software sensors; `push(depth_u16, color, t_ms)` injects one frame pair.

    `extrinsics_depth_to_color` (4x4, metres) lets alignment do real reprojection work; identity by default.
    """

    def __init__(self, serial: str, depth_intr: CameraIntrinsics, color_intr: CameraIntrinsics | None = None,
                 fps: int = 30, depth_scale: float = 0.001, extrinsics_depth_to_color: np.ndarray | None = None,
                 domain: rs.timestamp_domain = rs.timestamp_domain.hardware_clock) -> None:
        color_intr = color_intr or depth_intr
        self.depth_intr, self.color_intr, self.depth_scale, self.domain = depth_intr, color_intr, depth_scale, domain
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.serial_number, serial)
        self.device.register_info(rs.camera_info.name, "Intel RealSense D435 (software)")
        self._depth_sensor = self.device.add_sensor("Stereo Module")
        self._color_sensor = self.device.add_sensor("RGB Camera")
        self._depth_profile = self._add(self._depth_sensor, rs.stream.depth, rs.format.z16, 2, depth_intr, fps, 0)
        self._color_profile = self._add(self._color_sensor, rs.stream.color, rs.format.rgb8, 3, color_intr, fps, 1)
        self._depth_sensor.add_read_only_option(rs.option.depth_units, depth_scale)
        self._depth_sensor.add_option(rs.option.inter_cam_sync_mode, rs.option_range(0, 260, 1, 0), True)
        ext = rs.extrinsics()
        T = np.eye(4) if extrinsics_depth_to_color is None else np.asarray(extrinsics_depth_to_color, float)
        ext.rotation = [float(x) for x in T[:3, :3].T.ravel()]  # librealsense stores it column-major
        ext.translation = [float(x) for x in T[:3, 3]]
        self._depth_profile.register_extrinsics_to(self._color_profile, ext)
        self.device.create_matcher(rs.matchers.dlr_c)
        self._n = 0
        self._keep: list[np.ndarray] = []  # librealsense reads injected pixels after push returns

    @staticmethod
    def _add(sensor, stream, fmt, bpp: int, k: CameraIntrinsics, fps: int, uid: int):
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = (
            stream, 0, uid, k.width, k.height, fps, bpp, fmt)
        vs.intrinsics = _rs_intrinsics(k)
        return sensor.add_video_stream(vs, True).as_video_stream_profile()

    def push(self, depth_u16: np.ndarray, color: np.ndarray, t_ms: float) -> None:
        if depth_u16.shape != (self.depth_intr.height, self.depth_intr.width) or depth_u16.dtype != np.uint16:
            raise ValueError(f"depth must be uint16 {self.depth_intr.height}x{self.depth_intr.width}")
        if color.shape != (self.color_intr.height, self.color_intr.width, 3) or color.dtype != np.uint8:
            raise ValueError(f"color must be uint8 {self.color_intr.height}x{self.color_intr.width}x3")
        self._n += 1
        for sensor, profile, img, bpp in ((self._depth_sensor, self._depth_profile, depth_u16, 2),
                                          (self._color_sensor, self._color_profile, color, 3)):
            img = np.ascontiguousarray(img)
            self._keep = (self._keep + [img])[-8:]
            f = rs.software_video_frame()
            f.pixels, f.bpp, f.stride = img, bpp, img.shape[1] * bpp
            f.timestamp, f.domain, f.frame_number, f.profile = t_ms, self.domain, self._n, profile
            sensor.on_video_frame(f)
