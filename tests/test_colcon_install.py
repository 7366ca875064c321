"""`colcon build` of ros2_ws/ (colcon-core + colcon-ros from PyPI), plain and --symlink-install, as a lab
builds it on the robot PC: the install space has what `ros2 launch` / `ros2 run` need, and a node started
from it, in a directory that is not the checkout, finds its calibration file and model in share/flow2one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flow2one.paths import repo_root
from tests.helpers import next_domain_id

REPO = repo_root()
SRC = REPO / "ros2_ws" / "src"
NODES = ("sim_world", "camera", "pointcloud", "policy", "executor", "teleop", "recorder", "replay")
GRAPHS = ("deploy", "sim", "teleop_record", "sim_teleop_record", "replay")


@pytest.fixture(scope="module", params=["plain", "symlink"])
def install(request, tmp_path_factory) -> tuple[str, Path]:
    """A colcon install space (the package's prefix, install/flow2one) built outside the checkout."""
    ws = tmp_path_factory.mktemp(f"colcon_{request.param}")
    cmd = [sys.executable, "-m", "colcon", "--log-base", str(ws / "log"), "build", "--base-paths", str(SRC),
           "--build-base", str(ws / "build"), "--install-base", str(ws / "install")]
    if request.param == "symlink":
        cmd.append("--symlink-install")
    r = subprocess.run(cmd, cwd=ws, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return request.param, ws / "install" / "flow2one"


def site_packages(prefix: Path) -> Path:
    return prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def installed_env(prefix: Path) -> dict[str, str]:
    """The environment after `. install/setup.sh` (as on the robot PC), without the checkout on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("FLOW2ONE_ROOT", "PYTHONPATH", "AMENT_PREFIX_PATH")}
    r = subprocess.run(["bash", "-c", f". {prefix.parent / 'setup.sh'} && env -0"], env=env, capture_output=True,
                       timeout=60, check=True)
    env = dict(kv.split("=", 1) for kv in r.stdout.decode().split("\0") if "=" in kv)
    return env | {"ROS_DOMAIN_ID": str(next_domain_id()), "PYTHONUNBUFFERED": "1"}


def test_install_space_has_launch_config_data_executables_and_index_marker(install) -> None:
    mode, prefix = install
    share = prefix / "share" / "flow2one"
    assert (prefix / "share/ament_index/resource_index/packages/flow2one").is_file()
    assert (share / "package.xml").is_file()
    assert {p.name for p in (share / "launch").iterdir()} == {f"{g}.launch.py" for g in GRAPHS}
    assert {p.name for p in (share / "config").iterdir()} == {f"{g}.yaml" for g in GRAPHS} | {"topics"}
    assert {p.name for p in (share / "config" / "topics").iterdir()} == {"flow2one.yaml", "realsense_franka.yaml"}
    assert (share / "calibration/sim.yaml").is_file() and (share / "calibration/lab_d435.yaml").is_file()
    for model in ("sim_student", "sim_l1flow", "sim_regression"):
        assert (share / "models" / model / "card.yaml").is_file() and (share / "models" / model / "model.onnx").is_file()
    for exe in ("flow2one", *NODES):
        path = prefix / "lib" / "flow2one" / exe
        assert path.is_file() and os.access(path, os.X_OK), path
    pkg = site_packages(prefix) / "flow2one"
    if mode == "plain":  # a copy: the layout in which a root computed from __file__ pointed into install/
        assert (pkg / "paths.py").is_file() and not (pkg / "paths.py").is_symlink()


def test_install_space_resolves_data_from_share_outside_the_checkout(install, tmp_path) -> None:
    mode, prefix = install
    code = "import flow2one.paths as p; print(p.__file__); print(p.data_root()); print(p.resolve('models/sim_student'))"
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=installed_env(prefix), capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    module, root, model = r.stdout.split("\n")[:3]
    if mode == "plain":
        assert Path(module).is_relative_to(prefix), module
    assert Path(root) == prefix / "share" / "flow2one"
    assert Path(model) == prefix / "share" / "flow2one" / "models" / "sim_student"


def test_install_space_honours_flow2one_root(install, tmp_path) -> None:
    _, prefix = install
    (tmp_path / "lab" / "calibration").mkdir(parents=True)
    env = installed_env(prefix) | {"FLOW2ONE_ROOT": str(tmp_path / "lab")}
    r = subprocess.run([sys.executable, "-c", "import flow2one.paths as p; print(p.data_root())"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0 and Path(r.stdout.strip()) == tmp_path / "lab", r.stdout + r.stderr
    env["FLOW2ONE_ROOT"] = str(tmp_path / "missing")
    r = subprocess.run([sys.executable, "-c", "import flow2one.paths as p; p.data_root()"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode != 0 and "FLOW2ONE_ROOT" in r.stderr and "is not a directory" in r.stderr


def start_and_wait(exe: Path, args: list[str], env: dict[str, str], cwd: Path, expect: str, timeout: float = 60.0) -> str:
    """Start an installed node executable, wait for a log line containing `expect`, stop it with SIGINT."""
    proc = subprocess.Popen([str(exe), "--ros-args", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stdout:
            lines.append(line)
            if expect in line or time.monotonic() > deadline:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return "".join(lines)


@pytest.mark.timeout(180)
def test_installed_nodes_find_calibration_and_model(install, tmp_path) -> None:
    _, prefix = install
    share = prefix / "share" / "flow2one"
    env, params = installed_env(prefix), ["--params-file", str(share / "config" / "sim.yaml")]
    out = start_and_wait(prefix / "lib/flow2one/pointcloud", ["-r", "__node:=pointcloud", *params], env, tmp_path,
                         f"from {share / 'calibration' / 'sim.yaml'}")
    assert f"from {share / 'calibration' / 'sim.yaml'}" in out, out[-3000:]
    out = start_and_wait(prefix / "lib/flow2one/policy", ["-r", "__node:=policy", *params], env, tmp_path,
                         f"from {share / 'models' / 'sim_student'}")
    assert f"from {share / 'models' / 'sim_student'} on onnxruntime/cpu" in out, out[-3000:]
