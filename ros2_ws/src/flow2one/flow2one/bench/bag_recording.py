"""Benchmark: can the recorder keep up with a camera, per chunk compression (none = the baseline)?

Writes frames shaped like one RealSense at 640x480 (rgb8 + 16UC1 aligned depth + a 4,096-point cloud,
CDR-serialised by rclpy) through EpisodeBagWriter and reports write throughput, the per-frame cost and
the file size, for compression none / lz4 / zstd. The images are smooth gradients with sensor-like
noise, so compression ratios are indicative only (real scenes compress differently).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from flow2one import spec
from flow2one.bench.timing import Timing
from flow2one.data.bags import EpisodeBagWriter, EpisodeInfo

FPS = 30.0


def _frames(n: int, seed: int = 0) -> list[tuple[bytes, bytes, bytes]]:
    from rclpy.serialization import serialize_message

    from flow2one.ros.convert import numpy_to_image, xyz_to_pointcloud2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:480, 0:640]
    out = []
    for i in range(n):
        rgb = np.stack([(xx + i) % 256, (yy + 2 * i) % 256, (xx + yy) % 256], -1)
        rgb = np.clip(rgb + rng.normal(0, 3, rgb.shape), 0, 255).astype(np.uint8)
        depth = (800 + 0.5 * yy + rng.normal(0, 2, yy.shape)).astype(np.uint16)
        cloud = rng.random((spec.N_POINTS, 3), dtype=np.float32)
        out.append((serialize_message(numpy_to_image(rgb, "rgb8", i + 1)),
                    serialize_message(numpy_to_image(depth, "16UC1", i + 1)),
                    serialize_message(xyz_to_pointcloud2(cloud, i + 1))))
    return out


def run(quick: bool = False) -> dict:
    frames = _frames(10 if quick else 30)
    repeats = 1 if quick else 3
    frame_bytes = sum(len(b) for b in frames[0])
    need_mb_s = frame_bytes * FPS / 1e6
    result: dict = {"frame_mb": round(frame_bytes / 1e6, 3), "needed_mb_s_at_30fps": round(need_mb_s, 1)}
    for comp in ("none", "lz4", "zstd"):
        times, size = [], 0
        for _r in range(repeats):
            with tempfile.TemporaryDirectory() as d:
                w = EpisodeBagWriter(Path(d) / "episode_00000.mcap", EpisodeInfo(), compression=comp,
                                     flush_period_s=0.5)
                t0 = time.perf_counter()
                for i, (rgb, depth, cloud) in enumerate(frames):
                    t = (i + 1) * 33_000_000
                    w.write(spec.camera_topics("front")["color"], "sensor_msgs/msg/Image", rgb, t)
                    w.write(spec.camera_topics("front")["depth"], "sensor_msgs/msg/Image", depth, t)
                    w.write(spec.POINTS_TOPIC, "sensor_msgs/msg/PointCloud2", cloud, t)
                path = w.close(success=True)
                times.append(time.perf_counter() - t0)
                size = path.stat().st_size
        per_frame = Timing.of(times).ms_median / 1e3 / len(frames)
        result[comp] = {"ms_per_frame_median": round(per_frame * 1e3, 2),
                        "throughput_mb_s": round(frame_bytes / per_frame / 1e6, 1),
                        "realtime_margin_at_30fps": round(frame_bytes / per_frame / 1e6 / need_mb_s, 2),
                        "size_ratio": round(size / (frame_bytes * len(frames)), 3)}
    base = result["none"]["ms_per_frame_median"]
    for comp in ("lz4", "zstd"):
        result[comp]["cost_vs_none"] = round(result[comp]["ms_per_frame_median"] / base, 2)
    return result
