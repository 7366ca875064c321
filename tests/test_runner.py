"""The in-process graph runner, `flow2one run` and the node console scripts, with real rclpy nodes of
the project (pointcloud + recorder) on an isolated ROS domain over loopback."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from flow2one import spec
from flow2one.apps import run as run_cmd
from flow2one.graph import GRAPHS, GraphSpec
from flow2one.paths import repo_root
from tests.helpers import wait_for

REPO = repo_root()


class Probe:
    """A node in its own context on the test's domain: what another process on the robot would see."""

    def __init__(self, domain_id: int) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node("test_probe", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_until(self, cond, timeout: float = 15.0, each=None) -> bool:
        def step() -> bool:
            if each is not None:
                each()
            self.executor.spin_once(timeout_sec=0.05)
            return cond()

        return wait_for(step, timeout=timeout, period=0.0)

    def get_param(self, node: str, name: str):
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        client = self.node.create_client(GetParameters, f"/{node}/get_parameters")
        assert self.spin_until(client.service_is_ready, timeout=20.0), f"/{node}/get_parameters never appeared"
        # A ready service can still drop the reply: Fast DDS matches the request and reply topics
        # separately, and a reply written before the reply reader is matched is lost (ros2/rmw_fastrtps#392,
        # #842). `ros2 param get` has the same race; the remedy there and here is to ask again.
        for _ in range(10):
            future = client.call_async(GetParameters.Request(names=[name]))
            if self.spin_until(future.done, timeout=2.0):
                return parameter_value_to_python(future.result().values[0])
            client.remove_pending_request(future)
        raise AssertionError(f"/{node}/get_parameters never answered in 10 requests")

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def probe(domain_id: int):
    p = Probe(domain_id)
    yield p
    p.close()


def test_runner_starts_a_subset_with_overrides_and_stops_cleanly(tmp_path: Path, domain_id: int, probe: Probe
                                                                  ) -> None:
    """pointcloud + recorder of sim_teleop_record: file < extra file < overrides, and the overridden
    n_points really shapes the clouds the node publishes from depth images it receives over DDS."""
    from sensor_msgs.msg import Image, PointCloud2

    from flow2one.ros.convert import numpy_to_image, pointcloud2_to_xyz, stamp_to_ns
    from flow2one.ros.qos import SENSOR_QOS
    from flow2one.ros.runner import GraphRunner

    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"pointcloud": {"ros__parameters": {"seed": 7, "n_points": 999}},
                                     "recorder": {"ros__parameters": {"operator": "from_file"}}}))
    overrides = {"pointcloud": {"cameras": "front", "n_points": 256},
                 "recorder": {"output_dir": str(tmp_path / "demos"), "recover_on_start": False, "task": "t"}}
    runner = GraphRunner("sim_teleop_record", nodes=["pointcloud", "recorder"], params_files=[extra],
                         overrides=overrides, domain_id=domain_id)
    clouds: list[PointCloud2] = []
    probe.node.create_subscription(PointCloud2, spec.POINTS_TOPIC, clouds.append, SENSOR_QOS)
    depth_pub = probe.node.create_publisher(Image, spec.camera_topics("front")["depth"], SENSOR_QOS)
    depth_mm = np.full((120, 160), 800, np.uint16)  # a wall 0.8 m in front of the sim front camera
    stamp = 1_000_000_000

    with runner:
        pc, rec = runner.nodes["pointcloud"], runner.nodes["recorder"]
        assert (pc.p.n_points, pc.p.cameras, pc.p.seed) == (256, "front", 7)  # override > extra file
        assert pc.p.calibration_file == "calibration/sim.yaml"  # from config/sim_teleop_record.yaml
        assert (rec.p.operator, rec.p.task, rec.p.output_dir) == ("from_file", "t", str(tmp_path / "demos"))
        assert probe.spin_until(lambda: {"pointcloud", "recorder"} <= set(probe.node.get_node_names()))
        assert probe.spin_until(lambda: bool(clouds), timeout=20.0,
                                each=lambda: depth_pub.publish(numpy_to_image(depth_mm, "16UC1", stamp, "front")))
        cloud = clouds[-1]
        assert pointcloud2_to_xyz(cloud).shape == (256, 3)
        assert cloud.header.frame_id == spec.BASE_FRAME and stamp_to_ns(cloud.header.stamp) == stamp
        thread = runner._thread
    assert not runner.context.ok() and runner.nodes == {}
    assert thread is not None and not thread.is_alive()
    assert probe.spin_until(lambda: "pointcloud" not in probe.node.get_node_names(), timeout=15.0)


def test_runner_applies_graph_remappings(domain_id: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from flow2one.ros.runner import GraphRunner

    remapped = "/test/points_remapped"
    monkeypatch.setitem(GRAPHS, "test_remap", GraphSpec(
        GRAPHS["sim"].nodes, GRAPHS["sim"].params, remappings={"pointcloud": ((spec.POINTS_TOPIC, remapped),)}))
    with GraphRunner("test_remap", nodes=["pointcloud"], overrides={"pointcloud": {"cameras": "front"}},
                     domain_id=domain_id) as runner:
        node = runner.nodes["pointcloud"]
        assert node.count_publishers(remapped) == 1
        assert node.count_publishers(spec.POINTS_TOPIC) == 0


def test_runner_errors_are_clear_and_leave_nothing_running(tmp_path: Path, domain_id: int) -> None:
    from flow2one.ros.runner import GraphRunner

    with pytest.raises(KeyError, match="unknown graph"):
        GraphRunner("nope")
    with pytest.raises(KeyError, match=r"unknown nodes \['camera_x'\]"):
        GraphRunner("sim", nodes=["camera_x"])
    with pytest.raises(ValueError, match=r"overrides for nodes that are not started: \['policy'\]"):
        GraphRunner("sim", nodes=["pointcloud"], overrides={"policy": {"threads": 2}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("pointcloud: {ros__parameters: [1]}\n")
    with pytest.raises(ValueError, match="must map to"):
        GraphRunner("sim", nodes=["pointcloud"], params_files=[bad])
    # a typo in an override or a parameter file would otherwise be ignored by rclpy; every one is found
    # against the node's declaration before anything starts (no rclpy context is even created)
    typo_file = tmp_path / "typo.yaml"
    typo_file.write_text(yaml.safe_dump({"pointcloud": {"ros__parameters": {"voxel_sise": 0.02}}}))
    for kwargs, match in (({"overrides": {"pointcloud": {"n_pionts": 10}}},
                           r"no parameter\(s\) \['n_pionts'\] \(did you mean n_points\?\)"),
                          ({"overrides": {"pointcloud": {"voxel_size": 0.01, "slop_s": -1.0}}}, "slop_s"),
                          ({"overrides": {"pointcloud": {"n_points": "many"}}}, "'n_points' must be int"),
                          ({"params_files": [typo_file]}, r"no parameter\(s\) \['voxel_sise'\]")):
        with pytest.raises(ValueError, match=match):
            GraphRunner("sim", nodes=["pointcloud"], domain_id=domain_id, **kwargs)
    # an int where a float is declared is what a YAML author writes: accepted, as a float
    with GraphRunner("sim", nodes=["pointcloud"], domain_id=domain_id,
                     overrides={"pointcloud": {"slop_s": 1, "n_points": 512, "cameras": "front"}}) as runner:
        assert runner.nodes["pointcloud"].p.slop_s == 1.0
        assert isinstance(runner.nodes["pointcloud"].p.slop_s, float)


def test_run_cli_parses_set() -> None:
    got = run_cmd.parse_overrides(["policy.backend=onnxruntime", "executor.n_exec=8", "policy.fp16=false",
                                   "pointcloud.workspace_min=[0.1, -0.5, 0.0]", "policy.rate_hz=125.0",
                                   "recorder.task='8'", "policy.model_dir=models/a=b"])
    assert got == {"policy": {"backend": "onnxruntime", "fp16": False, "rate_hz": 125.0, "model_dir": "models/a=b"},
                   "executor": {"n_exec": 8}, "pointcloud": {"workspace_min": [0.1, -0.5, 0.0]},
                   "recorder": {"task": "8"}}
    for bad in ("policy=1", "policy.backend", ".backend=x", "policy.=x"):
        with pytest.raises(SystemExit, match="NODE.PARAM=VALUE"):
            run_cmd.parse_overrides([bad])


def _start(cmd: list[str], domain_id: int) -> subprocess.Popen:
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(proc: subprocess.Popen, sig: int) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"process ignored signal {sig}:\n{out[-3000:]}")
    return proc.returncode, out


def test_flow2one_run_cli_end_to_end(tmp_path: Path, domain_id: int, probe: Probe) -> None:
    """`flow2one run GRAPH --nodes ... --set ...` in its own process; the --set values are what the
    running node reports over the ROS parameter services; Ctrl-C ends it with status 0."""
    proc = _start([sys.executable, "-m", "flow2one.cli", "run", "sim_teleop_record", "--nodes", "pointcloud",
                   "--set", "pointcloud.cameras=front", "--set", "pointcloud.n_points=300",
                   "--set", "pointcloud.voxel_size=0.02", "--domain-id", str(domain_id)], domain_id)
    try:
        assert probe.get_param("pointcloud", "n_points") == 300
        assert probe.get_param("pointcloud", "voxel_size") == 0.02
        assert probe.get_param("pointcloud", "calibration_file") == "calibration/sim.yaml"
    finally:
        rc, out = _stop(proc, signal.SIGINT)
    assert rc == 0, out[-3000:]
    assert "running graph 'sim_teleop_record': pointcloud" in out


def test_flow2one_run_own_process_starts_children_and_stops_when_one_dies(domain_id: int, probe: Probe) -> None:
    """--own-process: the named node runs in a child with its --set values, the rest here; a child that dies
    ends the run with an error instead of leaving a graph without it."""
    proc = _start([sys.executable, "-m", "flow2one.cli", "run", "sim_teleop_record", "--nodes", "pointcloud,teleop",
                   "--own-process", "pointcloud", "--set", "pointcloud.n_points=300",
                   "--set", "pointcloud.cameras=front", "--set", "teleop.input=joy", "--domain-id", str(domain_id)],
                  domain_id)
    try:
        assert probe.get_param("pointcloud", "n_points") == 300
        assert probe.spin_until(lambda: "teleop" in probe.node.get_node_names(), 15.0)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        cmdline = Path(f"/proc/{children[0]}/cmdline").read_text().replace("\0", " ") if children else ""
        assert len(children) == 1 and "--nodes pointcloud" in cmdline, (children, cmdline)
        os.kill(int(children[0]), signal.SIGKILL)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            _stop(proc, signal.SIGINT)
    assert proc.returncode == 1, out[-3000:]
    assert "running graph 'sim_teleop_record': teleop, pointcloud (pid" in out
    assert "node pointcloud exited with -9; stopping the graph" in out


def test_flow2one_run_own_process_refuses_nodes_it_does_not_run() -> None:
    p = argparse.ArgumentParser()
    run_cmd.add_arguments(p)
    with pytest.raises(SystemExit, match="--own-process 'camera': not nodes of this run"):
        run_cmd.main(p.parse_args(["sim", "--own-process", "camera"]))
    with pytest.raises(SystemExit, match="leave at least one node in this process"):
        run_cmd.main(p.parse_args(["sim", "--nodes", "pointcloud", "--own-process", "pointcloud"]))
    with pytest.raises(SystemExit, match="not nodes of this run"):
        run_cmd.main(p.parse_args(["sim", "--own-process", "pointcloud+camera"]))
    with pytest.raises(SystemExit, match="leave at least one node in this process"):
        run_cmd.main(p.parse_args(["sim", "--nodes", "pointcloud,policy", "--own-process", "pointcloud+policy"]))


def test_own_process_entries_name_one_child_each() -> None:
    """"a+b" shares one child (as a component container holds two nodes), "a" has its own; empty entries
    (a trailing comma, a stray "+") name nothing."""
    from flow2one.ros.runner import process_groups

    assert process_groups(["pointcloud+policy", "view", "", "+", "sim_world+"]) == [
        ["pointcloud", "policy"], ["view"], ["sim_world"]]


def test_node_console_script_main_takes_ros_args_and_stops_on_sigterm(domain_id: int, probe: Probe) -> None:
    """What a launch file runs (one process per node): `main()` with --ros-args; SIGTERM exits cleanly."""
    code = "from flow2one.nodes.pointcloud import main; main()"
    proc = _start([sys.executable, "-c", code, "--ros-args", "-p", "cameras:=front", "-p", "n_points:=128",
                   "-p", "calibration_file:=calibration/sim.yaml"], domain_id)
    try:
        assert probe.get_param("pointcloud", "n_points") == 128
    finally:
        rc, out = _stop(proc, signal.SIGTERM)
    assert rc == 0, out[-3000:]


def test_node_process_runs_nodes_in_a_child_and_reports_why_it_could_not(domain_id: int) -> None:
    """NodeProcess (the sim world beside the demo graph): ready means the node is on the graph; a node
    that cannot start fails with the child's own error message; close() leaves no process behind."""
    from flow2one.ros.node_process import NodeProcess

    probe = Probe(domain_id)
    try:
        with NodeProcess("sim", ["pointcloud"], {"pointcloud": {"n_points": 512, "cameras": "front"}},
                         domain_id) as proc:
            assert proc.alive
            assert os.getpgid(proc.proc.pid) != os.getpgid(0)  # a terminal's Ctrl-C reaches the parent only
            assert probe.spin_until(lambda: "pointcloud" in probe.node.get_node_names(), 15.0)
        assert not proc.alive and proc.proc.returncode is not None
    finally:
        probe.close()
    with pytest.raises(RuntimeError, match="n_pionts"):  # the child refuses it too (checked again there)
        NodeProcess("sim", ["pointcloud"], {"pointcloud": {"n_pionts": 10}}, domain_id).start()
