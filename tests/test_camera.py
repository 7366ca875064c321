"""RealSense capture core on librealsense software devices: real pairing, filters, alignment, clocks, recovery."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyrealsense2 as rs
import pytest

from flow2one.perception.camera_model import CameraIntrinsics
from flow2one.perception.cloud import pixel_rays
from flow2one.perception.realsense import (
    SOFTWARE_DEVICES,
    CameraNotFoundError,
    CameraTimeoutError,
    CaptureConfig,
    CaptureThread,
    RealSenseCamera,
    find_connected_device,
)
from flow2one.perception.rs_software import SoftwareRealSense

INTR = CameraIntrinsics(640, 480, 615.0, 615.0, 320.0, 240.0)


def scene_frames(k: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 1 m wall with a 0.6 m box in the middle (uint16 mm) and a colour gradient that changes per frame."""
    depth = np.full((480, 640), 1000, np.uint16)
    depth[180:300, 260:380] = 600
    color = np.zeros((480, 640, 3), np.uint8)
    color[..., 0] = np.arange(640, dtype=np.uint16)[None, :] % 256
    color[..., 1] = np.arange(480, dtype=np.uint16)[:, None] % 256
    color[..., 2] = k % 256
    return depth, color


def open_camera(sw: SoftwareRealSense, **cfg) -> RealSenseCamera:
    cam = RealSenseCamera("front", "111", CaptureConfig(timeout_ms=cfg.pop("timeout_ms", 500), **cfg),
                          find_device=lambda s: {"111": sw.device}[s])
    cam.start()
    return cam


def test_round_trip_through_librealsense():
    sw = SoftwareRealSense("111", INTR, domain=rs.timestamp_domain.global_time)
    cam = open_camera(sw)
    try:
        t0 = time.time() * 1000
        for k in range(3):
            depth, color = scene_frames(k)
            sw.push(depth, color, t0 + 33.3 * k)
            f = cam.read()
            # global_time stamps are host time already: mapped exactly
            assert f.stamp_ns == int(round((t0 + 33.3 * k) * 1e6)) and f.frame_number == k + 1
            np.testing.assert_array_equal(f.color, color)
            # identity extrinsics: every aligned pixel equals the input; librealsense's align leaves ~2%
            # of pixels empty (its rounding of pixel bounds), never a wrong depth
            filled = f.depth > 0
            np.testing.assert_array_equal(f.depth[filled], depth[filled])
            assert filled.mean() > 0.97
            assert f.intrinsics == INTR and abs(f.depth_scale - 0.001) < 1e-7
    finally:
        cam.stop()


def test_alignment_reprojects_depth_into_the_color_camera():
    T = np.eye(4)
    T[0, 3] = -0.05  # depth -> color: x - 0.05 (the color camera sits 5 cm to the right)
    sw = SoftwareRealSense("111", INTR, extrinsics_depth_to_color=T)
    cam = open_camera(sw)
    try:
        depth = np.full((480, 640), 1000, np.uint16)  # flat wall at 1 m
        sw.push(depth, scene_frames()[1], 1000.0)
        aligned = cam.read().depth
    finally:
        cam.stop()
    # a point at pixel u in depth lands at u - fx * 0.05 / 1.0 = u - 30.75 in color: the right edge is empty
    valid_cols = np.flatnonzero(aligned[240] > 0)
    assert abs(valid_cols.max() - (639 - 30.75)) <= 2 and valid_cols.min() <= 1
    assert (aligned[240, valid_cols[5:-5]] == 1000).all()


def test_spatial_filter_smooths_noise():
    sw = SoftwareRealSense("111", INTR)
    rng = np.random.default_rng(0)
    depth = (1000 + rng.normal(0, 8, (480, 640))).astype(np.uint16)
    raw = open_camera(sw, filters=(), align_to_color=False)
    sw.push(depth, scene_frames()[1], 1000.0)
    raw_std = raw.read().depth[100:380, 100:540].std()
    raw.stop()
    smooth = open_camera(sw, filters=("spatial",), align_to_color=False)
    sw.push(depth, scene_frames()[1], 1033.3)
    smooth_std = smooth.read().depth[100:380, 100:540].std()
    smooth.stop()
    assert smooth_std < 0.7 * raw_std


def test_hardware_clock_is_mapped_to_host_time():
    sw = SoftwareRealSense("111", INTR, domain=rs.timestamp_domain.hardware_clock)
    cam = open_camera(sw)
    try:
        stamps = []
        for k in range(5):
            sw.push(*scene_frames(k), 5000.0 + 33.3 * k)  # device clock: 5 s since boot
            stamps.append(cam.read().stamp_ns)
            assert abs(stamps[-1] - time.time_ns()) < 200_000_000  # host epoch, not device time
            time.sleep(0.03)
        assert all(b > a for a, b in zip(stamps, stamps[1:]))
    finally:
        cam.stop()


def test_inter_cam_sync_mode_is_set_and_bad_requests_are_refused():
    sw = SoftwareRealSense("111", INTR)
    cam = open_camera(sw, inter_cam_sync_mode=2)
    assert sw.device.query_sensors()[0].get_option(rs.option.inter_cam_sync_mode) == 2
    cam.stop()
    with pytest.raises(ValueError, match=r"1280x720@30 not offered; offered: \['640x480@30'\]"):
        open_camera(sw, width=1280, height=720)
    with pytest.raises(ValueError, match="unknown depth filters"):
        CaptureConfig(filters=("median",))


def test_missing_serial_is_refused_with_the_connected_list():
    SOFTWARE_DEVICES["222"] = SoftwareRealSense("222", INTR).device
    try:
        with pytest.raises(CameraNotFoundError, match=r"'999' is not connected \(connected: \['222'\]\)"):
            find_connected_device("999")
    finally:
        SOFTWARE_DEVICES.pop("222")
    with pytest.raises(ValueError, match="serial is required"):
        RealSenseCamera("front", "")


def test_pointcloud_of_librealsense_matches_our_deprojection():
    sw = SoftwareRealSense("111", INTR)
    sensor = sw.device.query_sensors()[0]
    q = rs.frame_queue(2)
    sensor.open(sensor.get_stream_profiles()[0])
    sensor.start(q)
    try:
        depth, color = scene_frames()
        sw.push(depth, color, 1000.0)
        frame = q.wait_for_frame(2000)
        verts = np.asanyarray(rs.pointcloud().calculate(frame).get_vertices()).view(np.float32).reshape(-1, 3)
    finally:
        sensor.stop()
        sensor.close()
    ours = pixel_rays(INTR) * (depth.reshape(-1, 1) * 0.001)
    np.testing.assert_allclose(verts, ours, atol=2e-4)  # librealsense samples pixel centres the same way


def start_feeder(sw: SoftwareRealSense, feeding: threading.Event, stop: threading.Event) -> threading.Thread:
    """A ~30 fps stream of scene frames into `sw` while `feeding` is set, until `stop`."""

    def feed() -> None:
        k = 0
        while not stop.is_set():
            if feeding.is_set():
                sw.push(*scene_frames(k), 1000.0 + 33.3 * k)
                k += 1
            time.sleep(0.03)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    return feeder


def test_capture_thread_survives_a_camera_disappearing():
    sw = SoftwareRealSense("333", INTR)
    SOFTWARE_DEVICES["333"] = sw.device
    feeding, stop = threading.Event(), threading.Event()
    feeding.set()
    feeder = start_feeder(sw, feeding, stop)
    frames, status = [], []
    cam = RealSenseCamera("front", "333", CaptureConfig(timeout_ms=300))
    cap = CaptureThread(cam, frames.append, lambda ok, msg: status.append((ok, msg)), retry_s=0.1)
    try:
        assert wait(lambda: len(frames) >= 3)
        feeding.clear()  # frames stop: a USB stall
        SOFTWARE_DEVICES.pop("333")  # and the device is gone from the bus
        assert wait(lambda: sum(not ok for ok, _ in status) >= 2)
        assert any("no frames" in m for ok, m in status if not ok)
        assert any("not connected" in m for ok, m in status if not ok)
        n = len(frames)
        SOFTWARE_DEVICES["333"] = sw.device  # plugged back in
        feeding.set()
        assert wait(lambda: status[-1][0] and len(frames) >= n + 3)
        assert "recovered" in status[-1][1]
    finally:
        stop.set()
        cap.stop()
        feeder.join()
        SOFTWARE_DEVICES.pop("333", None)


def wait(cond, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_read_times_out_without_frames():
    sw = SoftwareRealSense("111", INTR)
    cam = open_camera(sw, timeout_ms=100)
    with pytest.raises(CameraTimeoutError, match="no frames for 100 ms"):
        cam.read()
    cam.stop()


class ResettableDevice:
    """A software device whose hardware_reset() behaves like a RealSense's (drops off the bus, comes back
    delivering): librealsense's software_device has no reset ("not implemented"), so this stands in for
    that one call and delegates everything else to the real software device."""

    def __init__(self, sw: SoftwareRealSense, on_reset) -> None:
        self.sw, self.on_reset, self.resets = sw, on_reset, 0

    def __getattr__(self, name: str):
        return getattr(self.sw.device, name)

    def hardware_reset(self) -> None:
        self.resets += 1
        self.on_reset()


def test_a_connected_camera_that_stops_delivering_gets_a_hardware_reset():
    sw = SoftwareRealSense("444", INTR)
    feeding, stop = threading.Event(), threading.Event()
    feeding.set()
    device = ResettableDevice(sw, on_reset=feeding.set)  # after the reset the camera streams again
    SOFTWARE_DEVICES["444"] = device
    feeder = start_feeder(sw, feeding, stop)
    frames, status = [], []
    cam = RealSenseCamera("front", "444", CaptureConfig(timeout_ms=200))
    cap = CaptureThread(cam, frames.append, lambda ok, msg: status.append((ok, msg)), retry_s=0.05, reset_after=3)
    try:
        assert wait(lambda: len(frames) >= 3)
        feeding.clear()  # a firmware stall: still on the bus, no frames
        assert wait(lambda: device.resets == 1)
        assert sum(not ok and "no frames" in m for ok, m in status) >= 3  # reset only after reset_after timeouts
        assert any("hardware reset sent" in m for ok, m in status if not ok)
        n = len(frames)
        assert wait(lambda: status[-1][0] and len(frames) >= n + 3)
        assert "recovered" in status[-1][1] and cap.resets == 1
    finally:
        stop.set()
        cap.stop()
        feeder.join()
        SOFTWARE_DEVICES.pop("444", None)


def test_a_camera_without_reset_support_keeps_retrying_and_says_why():
    sw = SoftwareRealSense("555", INTR)
    SOFTWARE_DEVICES["555"] = sw.device
    sw.push(*scene_frames(0), 1000.0)
    status = []
    cam = RealSenseCamera("front", "555", CaptureConfig(timeout_ms=100))
    cap = CaptureThread(cam, lambda f: None, lambda ok, msg: status.append((ok, msg)), retry_s=0.02, reset_after=2)
    try:
        assert wait(lambda: any("hardware reset failed" in m for _, m in status))
        assert cap.resets == 0 and cap._thread.is_alive()
    finally:
        cap.stop()
        SOFTWARE_DEVICES.pop("555", None)


def test_one_librealsense_context_per_process():
    from flow2one.perception import realsense

    assert realsense.context() is realsense.context()
    SOFTWARE_DEVICES["666"] = SoftwareRealSense("666", INTR).device
    try:
        assert "666" in realsense.connected_devices()
    finally:
        SOFTWARE_DEVICES.pop("666")
