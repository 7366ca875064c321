"""RealSense RGB-D capture over pyrealsense2, ROS-free: `RealSenseCamera` per serial, `CaptureThread` keeps it alive.

Sensors are opened directly (as realsense-ros does, not through rs.pipeline) so that the same code runs
a real D435 and a librealsense `software_device` (tests). Depth and color frames are paired by device
timestamp here, composed into a librealsense frameset, filtered (spatial/temporal/hole filling on the
depth) and aligned to color by librealsense itself. Device timestamps are mapped to host (= ROS) time.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyrealsense2 as rs

from flow2one.perception.camera_model import CameraIntrinsics

FILTERS: dict[str, Callable[[], rs.filter]] = {
    "spatial": rs.spatial_filter,
    "temporal": rs.temporal_filter,
    "hole_filling": rs.hole_filling_filter,
}


class CameraNotFoundError(LookupError):
    """The requested serial is not connected."""


class CameraTimeoutError(RuntimeError):
    """No complete depth + color pair within the timeout (camera unplugged, USB stall, sync master gone)."""


@dataclass(frozen=True)
class CaptureConfig:
    width: int = 640
    height: int = 480
    fps: int = 30
    align_to_color: bool = True
    filters: tuple[str, ...] = ()
    inter_cam_sync_mode: int = 0  # D400: 0 default (free running), 1 master, 2 slave
    timeout_ms: int = 1000

    def __post_init__(self) -> None:
        unknown = [f for f in self.filters if f not in FILTERS]
        if unknown:
            raise ValueError(f"unknown depth filters {unknown}; known: {sorted(FILTERS)}")
        if self.width <= 0 or self.height <= 0 or self.fps <= 0 or self.timeout_ms <= 0:
            raise ValueError(f"width, height, fps and timeout_ms must be positive: {self}")


@dataclass
class RGBDFrame:
    stamp_ns: int  # host/ROS time of the exposure (device timestamp mapped)
    frame_number: int
    color: np.ndarray  # (h, w, 3) uint8 rgb
    depth: np.ndarray  # (h, w) uint16, aligned to color when configured
    depth_scale: float  # metres per depth unit
    intrinsics: CameraIntrinsics  # of the depth image as delivered (the color camera's when aligned)
    color_intrinsics: CameraIntrinsics


def intrinsics_from_rs(i: rs.intrinsics) -> CameraIntrinsics:
    # realsense-ros publishes RealSense's Brown-Conrady coefficients under "plumb_bob" as well.
    return CameraIntrinsics(i.width, i.height, i.fx, i.fy, i.ppx, i.ppy, distortion_model="plumb_bob",
                            distortion=tuple(float(c) for c in i.coeffs))


class DeviceClock:
    """Maps frame timestamps to host time in ns.

    system_time / global_time domains are already host time (librealsense maps the device clock for
    global_time). For hardware_clock the offset host - device is estimated as the minimum over a window of
    (arrival - device) differences: the least-delayed frame bounds the transport latency best.
    """

    def __init__(self, window: int = 300) -> None:
        self._offsets: collections.deque[int] = collections.deque(maxlen=window)

    def to_host_ns(self, t_ms: float, domain: rs.timestamp_domain, arrival_ns: int) -> int:
        dev_ns = int(round(t_ms * 1e6))
        if domain in (rs.timestamp_domain.system_time, rs.timestamp_domain.global_time):
            return dev_ns
        if self._offsets and abs(arrival_ns - dev_ns - min(self._offsets)) > 1_000_000_000:
            self._offsets.clear()  # device clock restarted (reconnect, hardware reset)
        self._offsets.append(arrival_ns - dev_ns)
        return dev_ns + min(self._offsets)


# Devices made in-process (librealsense software devices: replay, tests) that rs.context() does not
# enumerate; find_connected_device looks here too, so the camera node runs on them unchanged.
SOFTWARE_DEVICES: dict[str, rs.device] = {}
_CONTEXT: list[rs.context] = []  # the process's one context, made on first use


def context() -> rs.context:
    """One librealsense context per process: each rs.context() enumerates USB again and runs its own device
    watcher, and devices taken from different contexts contend for the same hardware. Its query_devices()
    follows plugging and unplugging, so re-plugged cameras are found through it."""
    if not _CONTEXT:
        _CONTEXT.append(rs.context())
    return _CONTEXT[0]


def connected_devices() -> dict[str, rs.device]:
    """{serial: device} of the RealSenses connected now (and the in-process software devices)."""
    found = {d.get_info(rs.camera_info.serial_number): d for d in context().query_devices()}
    found.update(SOFTWARE_DEVICES)
    return found


def find_connected_device(serial: str) -> rs.device:
    """The connected RealSense with this serial; CameraNotFoundError lists what is connected otherwise."""
    found = connected_devices()
    if serial not in found:
        raise CameraNotFoundError(f"RealSense with serial {serial!r} is not connected "
                                  f"(connected: {sorted(found) or 'none'})")
    return found[serial]


def _pick_profile(sensor: rs.sensor, stream: rs.stream, fmt: rs.format, cfg: CaptureConfig) -> rs.video_stream_profile:
    offered = []
    for p in sensor.get_stream_profiles():
        if p.stream_type() != stream or p.format() != fmt:
            continue
        v = p.as_video_stream_profile()
        offered.append(f"{v.width()}x{v.height()}@{v.fps()}")
        if (v.width(), v.height(), v.fps()) == (cfg.width, cfg.height, cfg.fps):
            return v
    raise ValueError(f"{stream} {fmt} {cfg.width}x{cfg.height}@{cfg.fps} not offered; offered: {offered}")


def _sensor_with(device: rs.device, stream: rs.stream) -> rs.sensor:
    for s in device.query_sensors():
        if any(p.stream_type() == stream for p in s.get_stream_profiles()):
            return s
    raise ValueError(f"device has no sensor offering {stream}")


class RealSenseCamera:
    """One RealSense by serial: `start()`, then `read()` -> RGBDFrame (blocking), `stop()`.

    `find_device(serial)` defaults to the connected devices; tests pass librealsense software devices.
    """

    def __init__(self, name: str, serial: str, config: CaptureConfig | None = None,
                 find_device: Callable[[str], rs.device] = find_connected_device) -> None:
        if not serial:
            raise ValueError(f"camera {name}: a RealSense serial is required")
        self.name, self.serial, self.config, self._find = name, str(serial), config or CaptureConfig(), find_device
        self.clock = DeviceClock()
        self._sensors: list[rs.sensor] = []
        self._pending_color: rs.frame | None = None

    def start(self) -> None:
        cfg = self.config
        device = self._find(self.serial)
        depth_s, color_s = _sensor_with(device, rs.stream.depth), _sensor_with(device, rs.stream.color)
        depth_p = _pick_profile(depth_s, rs.stream.depth, rs.format.z16, cfg)
        color_p = _pick_profile(color_s, rs.stream.color, rs.format.rgb8, cfg)
        if cfg.inter_cam_sync_mode:
            if not depth_s.supports(rs.option.inter_cam_sync_mode):
                raise ValueError(f"camera {self.name} ({self.serial}) does not support inter_cam_sync_mode")
            depth_s.set_option(rs.option.inter_cam_sync_mode, float(cfg.inter_cam_sync_mode))
        self.depth_scale = float(depth_s.get_option(rs.option.depth_units))
        self._depth_q, self._color_q = rs.frame_queue(4, True), rs.frame_queue(4, True)
        self._compose = rs.processing_block(self._compose_pair)
        self._composed = rs.frame_queue(1, True)
        self._compose.start(self._composed)
        self._filters = [FILTERS[f]() for f in cfg.filters]
        self._align = rs.align(rs.stream.color) if cfg.align_to_color else None
        for s, p, q in ((depth_s, depth_p, self._depth_q), (color_s, color_p, self._color_q)):
            s.open(p)
            self._sensors.append(s)
            s.start(q)

    def _compose_pair(self, depth: rs.frame, source: rs.frame_source) -> None:
        source.frame_ready(source.allocate_composite_frame([depth, self._pending_color]))

    def _wait(self, q: rs.frame_queue, deadline: float) -> rs.frame:
        ok, f = q.try_wait_for_frame(max(1, int((deadline - time.monotonic()) * 1000)))
        if not ok:
            raise CameraTimeoutError(f"camera {self.name} ({self.serial}): no frames for {self.config.timeout_ms} ms")
        return f

    def read(self) -> RGBDFrame:
        """Next depth + color pair (timestamps within half a frame period), filtered and aligned."""
        if not self._sensors:
            raise RuntimeError(f"camera {self.name}: start() first")
        deadline = time.monotonic() + self.config.timeout_ms / 1000
        half_period_ms = 500.0 / self.config.fps
        depth, color = self._wait(self._depth_q, deadline), self._wait(self._color_q, deadline)
        while abs(depth.get_timestamp() - color.get_timestamp()) > half_period_ms:
            if depth.get_timestamp() < color.get_timestamp():
                depth = self._wait(self._depth_q, deadline)
            else:
                color = self._wait(self._color_q, deadline)
        arrival = time.time_ns()
        self._pending_color = color
        self._compose.invoke(depth)
        frames = self._composed.wait_for_frame(self.config.timeout_ms)
        for f in self._filters:
            frames = f.process(frames)
        frames = frames.as_frameset()
        if self._align is not None:
            frames = self._align.process(frames)
        d, c = frames.get_depth_frame(), frames.get_color_frame()
        return RGBDFrame(
            stamp_ns=self.clock.to_host_ns(depth.get_timestamp(), depth.get_frame_timestamp_domain(), arrival),
            frame_number=int(depth.get_frame_number()),
            color=np.asanyarray(c.get_data()).copy(),
            depth=np.asanyarray(d.get_data()).copy(),
            depth_scale=self.depth_scale,
            intrinsics=intrinsics_from_rs(d.profile.as_video_stream_profile().intrinsics),
            color_intrinsics=intrinsics_from_rs(c.profile.as_video_stream_profile().intrinsics),
        )

    def hardware_reset(self) -> None:
        """Power-cycle the camera over USB: it leaves the bus and re-enumerates a few seconds later, as on a
        re-plug. Clears firmware and USB stalls that closing and reopening the sensors does not."""
        self.stop()
        self._find(self.serial).hardware_reset()

    def stop(self) -> None:
        for s in self._sensors:
            for step in (s.stop, s.close):
                try:
                    step()
                except RuntimeError:  # already stopped, or the device is gone
                    pass
        self._sensors.clear()


class CaptureThread:
    """Reads one camera forever; on failure reports, stops it and retries every `retry_s` until `stop()`.

    A camera that is still connected but delivers nothing for `reset_after` reads in a row gets a
    hardware_reset(); an unplugged one is looked up again on every retry, so it comes back when re-plugged.
    `on_frame(frame)` and `on_status(ok, message)` run on this thread. The first `start()` happens in the
    constructor so a wrong serial fails loudly at start-up instead of retrying forever.
    """

    def __init__(self, camera: RealSenseCamera, on_frame: Callable[[RGBDFrame], None],
                 on_status: Callable[[bool, str], None], retry_s: float = 1.0, reset_after: int = 3) -> None:
        self.camera, self.on_frame, self.on_status, self.retry_s = camera, on_frame, on_status, retry_s
        self.reset_after = reset_after
        self.frames = 0
        self.failures = 0
        self.resets = 0
        self._stop = threading.Event()
        camera.start()
        self._thread = threading.Thread(target=self._run, name=f"realsense-{camera.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        healthy, timeouts = True, 0
        while not self._stop.is_set():
            try:
                if not healthy:
                    self.camera.start()
                frame = self.camera.read()
            except (RuntimeError, LookupError, ValueError) as exc:  # librealsense errors are RuntimeErrors
                self.failures += 1
                healthy = False
                self.camera.stop()
                message = str(exc)
                timeouts = timeouts + 1 if isinstance(exc, CameraTimeoutError) else 0
                if timeouts >= self.reset_after:
                    timeouts = 0
                    message += self._reset()
                self.on_status(False, message)
                self._stop.wait(self.retry_s)
                continue
            timeouts = 0
            if not healthy:
                healthy = True
                self.on_status(True, f"camera {self.camera.name} recovered")
            self.frames += 1
            self.on_frame(frame)

    def _reset(self) -> str:
        try:
            self.camera.hardware_reset()
        except (RuntimeError, LookupError) as exc:  # gone meanwhile, or a device without reset (software)
            return f"; hardware reset failed: {exc}"
        self.resets += 1
        return "; hardware reset sent (the camera re-enumerates in a few seconds)"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.camera.config.timeout_ms / 1000 + self.retry_s + 1)
        self.camera.stop()
