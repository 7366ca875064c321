"""The robot-PC preflight checks behind `flow2one doctor`: each check returns OK/WARN/FAIL/SKIP with a fix, so the
checklist reads as a to-do list for the lab."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import resource
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flow2one.graph import CLOUD_CROP_LINKS, graph, linked_params, load_params
from flow2one.paths import resolve

OK, WARN, FAIL, SKIP = "OK", "WARN", "FAIL", "n/a"
FCI_PORT = 1337  # libfranka's command connection (TCP); franky-sim serves the same port
ROBOT_DISTRO = "jazzy"
# libfranka versions a robot generation speaks (Franka's compatibility matrix): the FER (Panda) stops at
# 0.9.x (system 4.2.x), the FR3 starts at 0.10.
LIBFRANKA_FOR = {"fer": ((0, 0), (0, 10)), "fr3": ((0, 10), (99, 0))}
MIN_RTPRIO, MIN_FREE_GB, WARN_FREE_GB = 90, 5.0, 20.0


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def _ros() -> Check:
    distro = os.environ.get("ROS_DISTRO", "")
    try:
        from rclpy.utilities import get_rmw_implementation_identifier
        rmw = get_rmw_implementation_identifier()
    except Exception as exc:  # noqa: BLE001  rclpy missing or its C extension broken: say which
        return Check("ROS 2", FAIL, f"rclpy does not load: {exc}",
                     f"install ROS 2 {ROBOT_DISTRO} (apt) and `source /opt/ros/{ROBOT_DISTRO}/setup.bash`")
    detail = f"ROS_DISTRO={distro or 'unset'}, rmw {rmw}"
    if distro != ROBOT_DISTRO:
        return Check("ROS 2", WARN, detail + f" (the robot stack is built and tested for {ROBOT_DISTRO})",
                     f"`source /opt/ros/{ROBOT_DISTRO}/setup.bash` (PyPI wheels lack launch, rosbag2, message_filters)")
    return Check("ROS 2", OK, detail)


def libfranka_version() -> str | None:
    """The libfranka that franky-control bundles (its wheel ships libfranka-<hash>.so.<version>)."""
    try:
        files = importlib.metadata.files("franky-control") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        m = re.search(r"libfranka[^/]*\.so\.(\d+\.\d+\.\d+)", str(f))
        if m:
            return m.group(1)
    return None


def _franky(robot: str) -> Check:
    try:
        franky_v = importlib.metadata.version("franky-control")
        import franky  # noqa: F401  (the import is what fails on a broken build)
    except Exception as exc:  # noqa: BLE001  any import failure is the finding
        return Check("franky / libfranka", FAIL, f"franky does not load: {exc}",
                     "pip install franky-control==2.0.0 (FR3) or from franky's libfranka-0.9.2 index (FER): docker/")
    lf = libfranka_version()
    detail = f"franky-control {franky_v}, libfranka {lf or 'unknown'}, robot {robot.upper()}"
    fix = ("FER (Panda): pip install franky-control==2.0.0 --extra-index-url "
           "https://timschneider42.github.io/franky/whl/libfranka-0.9.2/ ; FR3: the PyPI wheel")
    if not franky_v.startswith("2."):
        return Check("franky / libfranka", FAIL, detail + " (flow2one needs franky 2.x: MotionReuseException)", fix)
    if lf is None:
        return Check("franky / libfranka", WARN, detail + " (cannot tell which libfranka franky was built with)", fix)
    lo, hi = LIBFRANKA_FOR[robot]
    if not lo <= tuple(int(x) for x in lf.split(".")[:2]) < hi:
        return Check("franky / libfranka", FAIL, detail + f" (a {robot.upper()} needs libfranka "
                     f"{'< 0.10' if robot == 'fer' else '>= 0.10'})", fix)
    return Check("franky / libfranka", OK, detail)


def _fci(host: str, timeout: float = 5.0) -> Check:
    """A TCP connect (fast failure when nothing listens), then libfranka's own handshake through franky, which
    is also where a robot refuses a libfranka of the wrong generation. Run before launch: the robot serves
    one client at a time."""
    fix = ("wire the PC to the controller's (shop-floor) port, give it an address in the robot's subnet, "
           "unlock the joints and activate FCI in Desk, and set executor.robot_host")
    try:
        socket.create_connection((host, FCI_PORT), timeout=min(timeout, 1.0)).close()
    except OSError as exc:
        return Check("FCI", FAIL, f"{host}:{FCI_PORT}: {exc}", fix)
    result: list[object] = []

    def handshake() -> None:
        try:
            import franky
            robot = franky.Robot(host, realtime_config=franky.RealtimeConfig.Ignore)
            result.append(str(robot.state.robot_mode))
            del robot
        except Exception as exc:  # noqa: BLE001  franky's exceptions do not share a base class
            result.append(exc)

    worker = threading.Thread(target=handshake, daemon=True)
    worker.start()
    worker.join(timeout)
    if not result:
        return Check("FCI", FAIL, f"{host}:{FCI_PORT} accepts TCP but libfranka got no answer in {timeout:g} s", fix)
    if isinstance(result[0], Exception):
        exc = result[0]
        incompatible = "ncompatible" in type(exc).__name__ + str(exc)
        return Check("FCI", FAIL, f"{host}: {type(exc).__name__}: {exc}",
                     "install franky built for the robot's libfranka (see the franky / libfranka check)"
                     if incompatible else fix)
    return Check("FCI", OK, f"{host}: libfranka connected, robot mode {result[0]}")


def _realtime(enforced: bool) -> list[Check]:
    """rtprio/memlock limits, PREEMPT_RT kernel, CPU governor; FAIL only where the graph enforces real time."""
    bad = FAIL if enforced else WARN
    why = "" if enforced else " (the graph ignores real time: fine for the sim)"
    out = []
    rt_soft, _ = resource.getrlimit(resource.RLIMIT_RTPRIO)
    ml_soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    rt_ok = os.geteuid() == 0 or rt_soft == resource.RLIM_INFINITY or rt_soft >= MIN_RTPRIO
    ml_ok = ml_soft == resource.RLIM_INFINITY or os.geteuid() == 0
    def fmt(v: int) -> str:
        return "unlimited" if v == resource.RLIM_INFINITY else str(v)

    detail = f"rtprio {fmt(rt_soft)}, memlock {fmt(ml_soft)}{' (root)' if os.geteuid() == 0 else ''}"
    out.append(Check("rtprio / memlock", OK if rt_ok and ml_ok else bad, detail + ("" if rt_ok and ml_ok else why),
                     "" if rt_ok and ml_ok else "add `@realtime - rtprio 99` and `@realtime - memlock unlimited` to "
                     "/etc/security/limits.conf, add your user to group realtime, log in again (docker: "
                     "--ulimit rtprio=99 --ulimit memlock=-1)"))
    version = platform.uname().version
    rt_kernel = "PREEMPT_RT" in version or Path("/sys/kernel/realtime").is_file() and \
        Path("/sys/kernel/realtime").read_text().strip() == "1"
    out.append(Check("PREEMPT_RT kernel", OK if rt_kernel else bad, f"{platform.release()} {version}"
                     + ("" if rt_kernel else why), "" if rt_kernel else
                     "Ubuntu 24.04: `sudo pro attach && sudo pro enable realtime-kernel`, reboot into it"))
    govs = sorted({p.read_text().strip() for p in Path("/sys/devices/system/cpu").glob("cpu*/cpufreq/scaling_governor")})
    if not govs:
        out.append(Check("CPU governor", WARN, "no cpufreq in /sys (VM or container): cannot check",
                         "on the robot PC: `sudo cpupower frequency-set -g performance`"))
    else:
        ok = govs == ["performance"]
        out.append(Check("CPU governor", OK if ok else bad, ", ".join(govs) + ("" if ok else why),
                         "" if ok else "`sudo cpupower frequency-set -g performance` (and deep C-states off in BIOS)"))
    return out


def _realsense(calibration_file: str) -> Check:
    from flow2one.perception.calibration import load_cameras

    try:
        cams = load_cameras(calibration_file)
    except (OSError, ValueError) as exc:
        return Check("RealSense cameras", FAIL, str(exc), "see the calibration check")
    import pyrealsense2 as rs

    from flow2one.perception.realsense import connected_devices

    devices = connected_devices()
    problems, found = [], []
    for cam in cams:
        dev = devices.get(str(cam.serial))
        if dev is None:
            problems.append(f"{cam.name} ({cam.serial}) not connected")
            continue
        usb, fw, rec = (dev.get_info(k) if dev.supports(k) else "" for k in (
            rs.camera_info.usb_type_descriptor, rs.camera_info.firmware_version,
            rs.camera_info.recommended_firmware_version))
        found.append(f"{cam.name} ({cam.serial}) USB {usb or '?'} fw {fw or '?'}")
        if not usb.startswith("3"):
            problems.append(f"{cam.name} on USB {usb or '?'} (needs USB 3 for depth + color at 30 fps)")
        if fw and rec and tuple(map(int, fw.split("."))) < tuple(map(int, rec.split("."))):
            problems.append(f"{cam.name} firmware {fw} older than the recommended {rec}")
    detail = "; ".join(found + problems) + f" (connected: {sorted(devices) or 'none'})"
    if problems:
        return Check("RealSense cameras", FAIL, detail,
                     "plug each camera into a USB 3 port with a USB 3 cable; put the serials of "
                     "`rs-enumerate-devices -s` into the calibration file; update firmware with `rs-fw-update`")
    return Check("RealSense cameras", OK, detail)


def _calibration(path: str, max_age_days: float) -> Check:
    from flow2one.perception.calibration import load_cameras

    p = resolve(path)
    try:
        cams = load_cameras(path)
    except (OSError, ValueError) as exc:
        return Check("calibration", FAIL, str(exc), "`flow2one calibrate ... --write` (calibration/README.md), "
                     "or point FLOW2ONE_ROOT at the directory holding your calibration/")
    age = (time.time() - p.stat().st_mtime) / 86400
    detail = f"{p}: {len(cams)} cameras ({', '.join(c.name for c in cams)}), {age:.0f} days old"
    if age > max_age_days:
        return Check("calibration", WARN, detail + f" (> {max_age_days:g})",
                     "re-run the hand-eye calibration if a camera or the table moved: `flow2one calibrate`")
    return Check("calibration", OK, detail)


def _model(p: dict) -> tuple[Check, object]:
    """`p`: the policy's parameters with what flow2one.graph.LINKS give it, so the crop checked is the node's."""
    from flow2one.perception.crop import LinkedCropParams
    from flow2one.runtime.card import CardError, load_card

    model_dir = resolve(p.get("model_dir", ""))
    try:
        card = load_card(model_dir)
        cams = tuple(c.strip() for c in str(p.get("cameras", "")).split(",") if c.strip())
        kw = {k: p[k] for k in ("base_frame", "n_points") if k in p}
        crop = LinkedCropParams(**{k: v for k, v in p.items() if k in CLOUD_CROP_LINKS}).cloud_crop
        card.check(cameras=cams, crop=crop, **kw)
    except (OSError, ValueError, CardError) as exc:
        return Check("model card", FAIL, f"{model_dir}: {exc}",
                     "train on your demonstrations and ship into models/ (README: 'A model for the robot'), or "
                     "set policy.model_dir"), None
    fits = "the policy and pointcloud parameters" if crop is not None and card.crop is not None else \
        "the policy parameters (its cloud crop is not checked: not recorded on the card or not known here)"
    return Check("model card", OK, f"{model_dir}: '{card.name}' ({card.kind}) matches {fits}"), card


def _engine(p: dict, card) -> Check:
    if p.get("backend") != "tensorrt":
        return Check("TensorRT engine", SKIP, f"backend {p.get('backend')}")
    if card is None:
        return Check("TensorRT engine", FAIL, "no valid model (see the model card check)", "fix the model first")
    try:
        import tensorrt as trt
        import torch
        if not torch.cuda.is_available():
            raise RuntimeError(f"torch {torch.__version__} sees no CUDA device")
    except Exception as exc:  # noqa: BLE001  any import or CUDA failure is the finding
        return Check("TensorRT engine", FAIL, f"TensorRT / CUDA not usable: {exc}",
                     "pip install 'tensorrt-cu12>=10,<11' and a CUDA build of torch (docker/ has both)")
    from flow2one.runtime.tensorrt_engine import build_plan, engine_path

    onnx = resolve(p["model_dir"]) / "model.onnx"
    _, _, fp16 = build_plan(trt, onnx, bool(p.get("fp16", True)))
    path = engine_path(onnx, torch.cuda.get_device_name(), trt.__version__, fp16, int(p.get("n_candidates", 1)))
    if path.is_file() and path.stat().st_mtime >= onnx.stat().st_mtime:
        return Check("TensorRT engine", OK, f"{path.name} cached")
    return Check("TensorRT engine", WARN, f"{path.name} not built yet (the first start builds it: minutes)",
                 f"build it now: `flow2one export {p['model_dir']} --tensorrt --max-batch {p.get('n_candidates', 1)}`")


def _disk(directory: str) -> Check:
    d = resolve(directory)
    probe = d if d.exists() else next((q for q in d.parents if q.exists()), Path("/"))
    free = shutil.disk_usage(probe).free / 1e9
    detail = f"{free:.0f} GB free at {probe}"
    if free < MIN_FREE_GB:
        return Check("disk space", FAIL, detail, "free space or set recorder.output_dir to a larger disk "
                     "(640x480 RGB-D at 30 fps is ~1 GB a minute per camera, lz4)")
    return Check("disk space", OK if free >= WARN_FREE_GB else WARN, detail,
                 "" if free >= WARN_FREE_GB else "free space before recording many demonstrations")


def run_checks(graph_name: str, robot: str | None = None, overrides: dict | None = None,
               max_calibration_age_days: float = 30.0) -> list[Check]:
    """Every check the graph needs, in checklist order. robot: fer | fr3 (None: fr3 for the sim graphs,
    whose franky-sim serves an FR3, else fer)."""
    params = load_params(graph_name)
    robot = robot or ("fr3" if "sim_world" in graph(graph_name).nodes else "fer")
    for node, values in (overrides or {}).items():
        params.setdefault(node, {}).update(values)
    nodes = graph(graph_name).nodes
    ex = params.get("executor", {})
    checks: list[Callable[[], Check | list[Check]]] = [_ros]
    if "executor" in nodes:
        checks += [lambda: _franky(robot), lambda: _fci(str(ex.get("robot_host", "172.16.0.2"))),
                   lambda: _realtime(ex.get("realtime", "enforce") == "enforce")]
    calibration = params.get("pointcloud", {}).get("calibration_file") or params.get("camera", {}).get(
        "calibration_file")
    if "camera" in nodes:
        checks.append(lambda: _realsense(params["camera"].get("calibration_file", calibration)))
    else:
        checks.append(lambda: Check("RealSense cameras", SKIP, f"graph {graph_name} has no camera node"))
    if calibration:
        checks.append(lambda: _calibration(calibration, max_calibration_age_days))
    if "policy" in nodes:
        model, card = _model({**params.get("policy", {}), **linked_params([params], nodes).get("policy", {})})
        checks += [lambda: model, lambda: _engine(params.get("policy", {}), card)]
    checks.append(lambda: _disk(str(params.get("recorder", {}).get("output_dir", "."))))
    out: list[Check] = []
    for check in checks:
        result = check()
        out += result if isinstance(result, list) else [result]
    return out


def format_checklist(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"[{c.status:^4}] {c.name}: {c.detail}")
        if c.fix and c.status in (FAIL, WARN):
            lines.append(f"       fix: {c.fix}")
    n_fail = sum(c.status == FAIL for c in checks)
    lines.append(f"{len(checks)} checks: {n_fail} failed, {sum(c.status == WARN for c in checks)} warnings")
    return "\n".join(lines)
