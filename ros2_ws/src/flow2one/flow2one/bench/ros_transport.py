"""Benchmark `ros_transport`: what a camera image and a policy cloud cost between two ROS processes.

A publisher subprocess (this module run as a script, on an isolated ROS_DOMAIN_ID) converts numpy ->
message, stamps it with the wall clock and publishes at a fixed rate; this process receives, converts
back to numpy and records now - stamp. Both sides use the same QoS, chosen from flow2one/ros/qos.py or
the best-effort alternative, optionally with another Fast DDS builtin transport. The conversion section
times our numpy <-> message functions against a naive per-element baseline in the same run.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from flow2one.bench.timing import Timing, time_calls

RATE_HZ = 30.0  # a RealSense colour/depth stream at 640x480; the cloud follows the camera
IMAGE_SHAPE = (480, 640, 3)
N_CLOUD = 4096
KINDS = ("image", "cloud")


def _qos(name: str):
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from flow2one.ros.qos import SENSOR_QOS

    if name == "sensor_qos":
        return SENSOR_QOS
    if name == "best_effort":
        return QoSProfile(depth=SENSOR_QOS.depth, history=SENSOR_QOS.history,
                          reliability=ReliabilityPolicy.BEST_EFFORT)
    if name.startswith("reliable_depth"):  # for trying other depths: reliable_depth10
        return QoSProfile(depth=int(name.removeprefix("reliable_depth")), reliability=ReliabilityPolicy.RELIABLE)
    raise ValueError(f"unknown QoS choice {name!r}: sensor_qos, best_effort or reliable_depth<N>")


def _payload(kind: str) -> tuple[type, np.ndarray, Callable]:
    """(message type, numpy payload, numpy -> message function taking stamp_ns)."""
    from sensor_msgs.msg import Image, PointCloud2

    from flow2one.ros import convert

    rng = np.random.default_rng(0)
    if kind == "image":
        arr = rng.integers(0, 256, IMAGE_SHAPE, dtype=np.uint8)
        return Image, arr, lambda ns: convert.numpy_to_image(arr, "rgb8", ns, "bench")
    if kind == "cloud":
        arr = rng.normal(size=(N_CLOUD, 3)).astype(np.float32)
        return PointCloud2, arr, lambda ns: convert.xyz_to_pointcloud2(arr, ns, "bench")
    raise ValueError(f"unknown payload kind {kind!r}")


def _decode(kind: str) -> Callable:
    from flow2one.ros import convert

    return convert.image_to_numpy if kind == "image" else convert.pointcloud2_to_xyz


def _publish_loop(node, kind: str, qos_name: str, count: int, rate_hz: float, stop: threading.Event | None = None
                  ) -> int:
    """Wait for a subscriber, then publish `count` messages at `rate_hz`, stamping each just before
    numpy -> message conversion (so the latency covers both conversions and the transport)."""
    msg_type, _, make = _payload(kind)
    pub = node.create_publisher(msg_type, f"/bench/{kind}", _qos(qos_name))
    deadline = time.monotonic() + 20.0
    while pub.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            raise RuntimeError("no subscriber matched within 20 s")
        time.sleep(0.01)
    time.sleep(0.5)  # let the reverse discovery (subscriber -> publisher) finish too
    period = 1.0 / rate_hz
    t_next = time.monotonic()
    for i in range(count):
        if stop is not None and stop.is_set():
            return i
        pub.publish(make(time.time_ns()))
        t_next += period
        time.sleep(max(0.0, t_next - time.monotonic()))
    return count


def _publisher_main(argv: list[str]) -> int:
    """The subprocess side: its own rclpy context on the given domain."""
    p = argparse.ArgumentParser()
    p.add_argument("--domain", type=int, required=True)
    p.add_argument("--kind", choices=KINDS, required=True)
    p.add_argument("--qos", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--rate", type=float, default=RATE_HZ)
    a = p.parse_args(argv)
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node

    ctx = Context()
    rclpy.init(context=ctx, domain_id=a.domain)
    node = Node("bench_publisher", context=ctx)
    try:
        sent = _publish_loop(node, a.kind, a.qos, a.count, a.rate)
        time.sleep(0.3)  # reliable QoS: leave time for the last repairs before the writer goes away
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    print(json.dumps({"sent": sent}), flush=True)
    return 0


@contextmanager
def _free_domain():
    """A ROS domain in 201..230 (tests use 1..200) locked against concurrent benchmark runs."""
    lock_dir = Path(tempfile.gettempdir()) / "flow2one-bench-ros-domains"
    lock_dir.mkdir(exist_ok=True)
    for domain in random.sample(range(201, 231), 30):
        with open(lock_dir / f"{domain}.lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            yield domain
            return
    raise RuntimeError(f"ROS domains 201..230 are all in use by other benchmark runs ({lock_dir})")


@contextmanager
def _env(**values: str | None):
    """Fast DDS reads its transport variables when a context starts: set them around it."""
    old = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _summary(lat_ns: list[int], sent: int) -> dict:
    t = Timing.of(np.asarray(lat_ns, dtype=np.float64) / 1e9)
    out = {"sent": sent, "received": t.n}
    if t.n:
        out.update(p50_ms=round(t.ms(50), 3), p99_ms=round(t.ms(99), 3),
                   mean_ms=round(float(t.wall.mean()) * 1e3, 3), max_ms=round(float(t.wall.max()) * 1e3, 3))
    return out


def measure_transport(kind: str, qos_name: str, count: int, transport: str | None = None,
                      in_process: bool = False, rate_hz: float = RATE_HZ) -> dict:
    """Latency of `count` messages at `rate_hz`; publisher in a subprocess (or a thread when in_process)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from flow2one.ros.convert import stamp_to_ns

    msg_type, _, _ = _payload(kind)
    decode = _decode(kind)
    lat: list[int] = []

    def on_msg(msg) -> None:
        decode(msg)
        lat.append(time.time_ns() - stamp_to_ns(msg.header.stamp))

    env = {"FASTDDS_BUILTIN_TRANSPORTS": transport, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    with _free_domain() as domain, _env(**env):
        ctx = Context()
        rclpy.init(context=ctx, domain_id=domain)
        sub_node = Node("bench_subscriber", context=ctx)
        sub_node.create_subscription(msg_type, f"/bench/{kind}", on_msg, _qos(qos_name))
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(sub_node)
        result: dict = {}
        try:
            if in_process:
                pub_node = Node("bench_publisher", context=ctx)
                stop = threading.Event()
                t = threading.Thread(target=lambda: result.update(
                    sent=_publish_loop(pub_node, kind, qos_name, count, rate_hz, stop)), daemon=True)
                t.start()
                alive = t.is_alive
            else:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "flow2one.bench.ros_transport", "--domain", str(domain), "--kind", kind,
                     "--qos", qos_name, "--count", str(count), "--rate", str(rate_hz)],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
                alive = lambda: proc.poll() is None  # noqa: E731
            deadline = time.monotonic() + count / rate_hz + 60.0
            while alive() and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.01)
            drain = time.monotonic() + 0.3
            while time.monotonic() < drain:
                executor.spin_once(timeout_sec=0.01)
            if in_process:
                stop.set()
                t.join(5.0)
                pub_node.destroy_node()
            else:
                if proc.poll() is None:
                    proc.kill()
                out, err = proc.communicate(timeout=10)
                if proc.returncode != 0:
                    raise RuntimeError(f"publisher failed ({proc.returncode}): {err.strip()[-2000:]}")
                result = json.loads(out.strip().splitlines()[-1])
        finally:
            executor.shutdown()
            sub_node.destroy_node()
            rclpy.shutdown(context=ctx)
    return _summary(lat, int(result.get("sent", 0)))


# --- conversions vs a naive per-element baseline -----------------------------------------------------

def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    return time_calls(fn, repeats, warmup=1, cpu_clock=None).ms_median


def _naive_image_to_msg(arr: np.ndarray):
    from sensor_msgs.msg import Image

    h, w, c = arr.shape
    return Image(height=h, width=w, encoding="rgb8", step=w * c, data=[int(v) for v in arr.reshape(-1)])


def _naive_msg_to_image(msg) -> np.ndarray:
    return np.array([v for v in msg.data], dtype=np.uint8).reshape(msg.height, msg.width, 3)


def _naive_xyz_to_cloud(xyz: np.ndarray):
    """What sensor_msgs_py-style code does: struct.pack per point."""
    from sensor_msgs.msg import PointCloud2, PointField

    data = b"".join(struct.pack("<fff", *p) for p in xyz.tolist())
    fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate("xyz")]
    return PointCloud2(height=1, width=len(xyz), fields=fields, point_step=12, row_step=12 * len(xyz), data=data)


def _naive_cloud_to_xyz(msg) -> np.ndarray:
    buf = bytes(msg.data)
    return np.array([struct.unpack_from("<fff", buf, i * msg.point_step) for i in range(msg.width * msg.height)],
                    dtype=np.float32)


def _naive_chunk_to_msg(actions: np.ndarray):
    from builtin_interfaces.msg import Duration
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from flow2one.spec import ACTION_NAMES, STEP_DT

    points = [JointTrajectoryPoint(positions=[float(v) for v in row],
                                   time_from_start=Duration(nanosec=round(i * STEP_DT * 1e9)))
              for i, row in enumerate(actions.tolist())]
    return JointTrajectory(joint_names=list(ACTION_NAMES), points=points)


def _naive_msg_to_chunk(msg) -> np.ndarray:
    return np.array([[v for v in p.positions] for p in msg.points], dtype=np.float32)


def measure_conversions(repeats: int, naive_repeats: int) -> dict:
    from rclpy.serialization import deserialize_message, serialize_message
    from trajectory_msgs.msg import JointTrajectory

    from flow2one.ros import convert
    from flow2one.spec import ACTION_DIM, HORIZON

    actions = np.random.default_rng(0).normal(size=(HORIZON, ACTION_DIM)).astype(np.float32)
    out = {}
    for kind, to_msg, naive_to, from_msg, naive_from in (
        ("image_640x480_rgb8", lambda a: convert.numpy_to_image(a, "rgb8"), _naive_image_to_msg,
         convert.image_to_numpy, _naive_msg_to_image),
        ("pointcloud2_4096_xyz", convert.xyz_to_pointcloud2, _naive_xyz_to_cloud,
         convert.pointcloud2_to_xyz, _naive_cloud_to_xyz),
        (f"chunk_{HORIZON}x{ACTION_DIM}", lambda a: convert.chunk_to_msg(a, 0), _naive_chunk_to_msg,
         lambda m: convert.msg_to_chunk(m, frame_id=None).actions, _naive_msg_to_chunk),
    ):
        if kind.startswith("chunk"):
            msg_type, arr = JointTrajectory, actions
        else:
            msg_type, arr, _ = _payload("image" if kind.startswith("image") else "cloud")
        received = deserialize_message(serialize_message(to_msg(arr)), msg_type)  # as a subscriber gets it
        assert np.array_equal(naive_from(received), from_msg(received)), kind
        enc = _median_ms(lambda: to_msg(arr), repeats)
        enc_naive = _median_ms(lambda: naive_to(arr), naive_repeats)
        dec = _median_ms(lambda: from_msg(received), repeats)
        dec_naive = _median_ms(lambda: naive_from(received), naive_repeats)
        ser = _median_ms(lambda: serialize_message(received), repeats)
        out[kind] = {
            "numpy_to_msg_ms": round(enc, 4), "naive_numpy_to_msg_ms": round(enc_naive, 3),
            "numpy_to_msg_speedup": round(enc_naive / enc, 1),
            "msg_to_numpy_ms": round(dec, 4), "naive_msg_to_numpy_ms": round(dec_naive, 3),
            "msg_to_numpy_speedup": round(dec_naive / dec, 1),
            "rclpy_serialize_ms": round(ser, 4),
        }
    return out


def run(quick: bool = False) -> dict:
    """The `ros_transport` benchmark (quick: 1 s per configuration, cross-process configurations only)."""
    count = int(RATE_HZ * (1.0 if quick else 6.0))
    configs = [("sensor_qos", None, False), ("best_effort", None, False)]
    if not quick:
        configs += [("sensor_qos", "LARGE_DATA", False), ("sensor_qos", None, True), ("best_effort", None, True)]
    transport: dict[str, dict] = {}
    runs = [(kind, cfg) for kind in KINDS for cfg in configs]
    for kind, (qos_name, fastdds, in_process) in tqdm(runs, desc="ros_transport", unit="config", file=sys.stderr):
        label = "image_640x480_rgb8" if kind == "image" else "pointcloud2_4096_xyz"
        name = qos_name + (f"+{fastdds}" if fastdds else "") + ("+in_process" if in_process else "")
        transport.setdefault(label, {})[name] = measure_transport(kind, qos_name, count, fastdds, in_process)
    return {
        "rate_hz": RATE_HZ,
        "messages_per_config": count,
        "latency": "publisher numpy->msg + DDS + subscriber msg->numpy, wall clock; publisher in a second "
                   "process on loopback (in_process: a second node in the subscriber's context)",
        "qos": {"sensor_qos": "flow2one.ros.qos.SENSOR_QOS (reliable, keep last 2)",
                "best_effort": "best effort, keep last 2", "LARGE_DATA": "FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA"},
        "cpu_count": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "transport": transport,
        "conversion": measure_conversions(repeats=10 if quick else 50, naive_repeats=2 if quick else 5),
    }


if __name__ == "__main__":
    sys.exit(_publisher_main(sys.argv[1:]))
