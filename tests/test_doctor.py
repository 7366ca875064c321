"""`flow2one doctor`: the robot-PC preflight, run with the parts that exist here: franky-sim as the robot
(real libfranka handshake), librealsense software devices as the cameras, the shipped model and real files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyrealsense2 as rs
import pytest

from flow2one.control.franky_sim import FrankySimProcess, free_loopback_host
from flow2one.paths import repo_root
from flow2one.perception.camera_model import CameraIntrinsics
from flow2one.perception.realsense import SOFTWARE_DEVICES
from flow2one.perception.rs_software import SoftwareRealSense
from flow2one.preflight import FAIL, OK, SKIP, WARN, format_checklist, run_checks

REPO = repo_root()
CHECKS = ("ROS 2", "franky / libfranka", "FCI", "rtprio / memlock", "PREEMPT_RT kernel", "CPU governor",
          "RealSense cameras", "calibration", "model card", "TensorRT engine", "disk space")


def by_name(checks) -> dict:
    return {c.name: c for c in checks}


@pytest.mark.timeout(120)
def test_doctor_against_the_sim_prints_a_full_checklist() -> None:
    with FrankySimProcess() as sim:
        r = subprocess.run([sys.executable, "-m", "flow2one.cli", "doctor", "--graph", "sim", "--set",
                            f"executor.robot_host={sim.host}"], capture_output=True, text=True, timeout=90,
                           check=False, env=dict(os.environ, PYTHONPATH=str(REPO / "ros2_ws/src/flow2one")))
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    for name in CHECKS:  # every check is on the list, each once
        assert sum(line.startswith("[") and f"] {name}: " in line for line in lines) == 1, name
    assert f"[ OK ] FCI: {sim.host}: libfranka connected" in r.stdout
    assert "[ OK ] franky / libfranka: franky-control 2.0.0, libfranka 0.21.2, robot FR3" in r.stdout
    assert "sim_student: 'sim_student' (student) matches the policy and pointcloud parameters" in r.stdout
    assert "[n/a ] RealSense cameras: graph sim has no camera node" in r.stdout
    assert "11 checks: 0 failed" in r.stdout


def software_camera(serial: str, usb: str, firmware: str) -> SoftwareRealSense:
    sw = SoftwareRealSense(serial, CameraIntrinsics(640, 480, 615.0, 615.0, 320.0, 240.0))
    sw.device.register_info(rs.camera_info.usb_type_descriptor, usb)
    sw.device.register_info(rs.camera_info.firmware_version, firmware)
    sw.device.register_info(rs.camera_info.recommended_firmware_version, "5.16.0.1")
    SOFTWARE_DEVICES[serial] = sw.device
    return sw


def test_doctor_on_deploy_names_each_failure_with_its_fix(tmp_path: Path) -> None:
    """lab_d435.yaml's two cameras: one fine, one on USB 2 with old firmware; no robot at robot_host; the
    shipped sim student as the model, TensorRT as the backend (not installed here)."""
    cams = [software_camera("123456789012", "3.2", "5.16.0.1"), software_camera("123456789013", "2.1", "5.12.7.100")]
    try:
        checks = run_checks("deploy", overrides={"executor": {"robot_host": free_loopback_host()},
                                                 "policy": {"model_dir": "models/sim_student"},
                                                 "recorder": {"output_dir": str(tmp_path)}})
    finally:
        for c in cams:
            SOFTWARE_DEVICES.pop(c.device.get_info(rs.camera_info.serial_number))
    c = by_name(checks)
    assert [x.name for x in checks] == list(CHECKS)
    for x in checks:
        assert x.status in (OK, WARN, FAIL, SKIP)
        assert x.status not in (FAIL, WARN) or x.fix, f"{x.name} has no fix"
    cam = c["RealSense cameras"]
    assert cam.status == FAIL and "front (123456789012) USB 3.2 fw 5.16.0.1" in cam.detail
    assert "side on USB 2.1" in cam.detail and "firmware 5.12.7.100 older than the recommended 5.16.0.1" in cam.detail
    assert c["FCI"].status == FAIL and "robot_host" in c["FCI"].fix
    assert c["franky / libfranka"].status == FAIL and "libfranka-0.9.2" in c["franky / libfranka"].fix  # PyPI = FR3
    assert c["model card"].status == OK
    assert c["TensorRT engine"].status == FAIL and "tensorrt-cu12" in c["TensorRT engine"].fix
    assert c["calibration"].status == OK and "lab_d435.yaml: 2 cameras (front, side)" in c["calibration"].detail
    assert "PREEMPT_RT" in platform_version() or c["PREEMPT_RT kernel"].status == FAIL  # deploy enforces real time
    text = format_checklist(checks)
    assert text.count("       fix: ") == sum(x.status in (FAIL, WARN) for x in checks)


def platform_version() -> str:
    import platform

    return platform.uname().version


def test_doctor_flags_a_missing_robot_model_and_an_old_calibration(tmp_path: Path) -> None:
    shutil.copy(REPO / "calibration" / "lab_d435.yaml", tmp_path / "old.yaml")
    old = time.time() - 60 * 86400
    os.utime(tmp_path / "old.yaml", (old, old))
    checks = by_name(run_checks("deploy", overrides={"pointcloud": {"calibration_file": str(tmp_path / "old.yaml")},
                                                     "camera": {"calibration_file": str(tmp_path / "old.yaml")},
                                                     "executor": {"robot_host": free_loopback_host()}}))
    assert checks["calibration"].status == WARN and "60 days old" in checks["calibration"].detail
    model = checks["model card"]
    assert model.status == FAIL and "robot_student" in model.detail and "A model for the robot" in model.fix


def test_doctor_rejects_a_malformed_set() -> None:
    r = subprocess.run([sys.executable, "-m", "flow2one.cli", "doctor", "--set", "nodot=1"], capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 2 and "--set expects NODE.PARAM=VALUE" in r.stdout
