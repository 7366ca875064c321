"""The Rerun view: a short sim episode and a replayed bag recorded with --view-save, a converted dataset
episode and its bag opened with `flow2one view`, each read back with Rerun's own reader (rerun.chunk.RrdReader)."""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from flow2one import spec
from flow2one.apps import demo
from flow2one.cli import main as cli_main
from flow2one.paths import repo_root
from flow2one.ros.graph_episodes import DEMO_IMAGE_HZ

ROOT = repo_root()


def read_rrd(path: Path) -> tuple[Counter, dict[str, list], dict[str, set[str]]]:
    """(rows per entity, {entity: per-row list lengths of its positions/strips, or its scalar values},
    {entity: its timelines})."""
    from rerun.chunk import RrdReader

    rows: Counter = Counter()
    sizes: dict[str, list] = defaultdict(list)
    timelines: dict[str, set[str]] = defaultdict(set)
    for chunk in RrdReader(path).stream():
        rows[chunk.entity_path] += chunk.num_rows
        timelines[chunk.entity_path].update(chunk.timeline_names)
        batch = chunk.to_record_batch()
        for name in batch.schema.names:
            if name.endswith("Points3D:positions"):
                sizes[chunk.entity_path] += [len(r) for r in batch.column(name).to_pylist() if r is not None]
            elif name.endswith("Scalars:scalars"):
                sizes[chunk.entity_path] += [v for r in batch.column(name).to_pylist() if r for v in r]
            elif name.endswith("LineStrips3D:strips"):
                sizes[chunk.entity_path] += [[len(s) for s in r] for r in batch.column(name).to_pylist()
                                             if r is not None]
    return rows, sizes, timelines


def wall_times(path: Path) -> dict[str, list[int]]:
    """{entity: the wall_time (ns) of each of its rows}."""
    import pyarrow as pa
    from rerun.chunk import RrdReader

    times: dict[str, list[int]] = defaultdict(list)
    for chunk in RrdReader(path).stream():
        batch = chunk.to_record_batch()
        if "wall_time" in batch.schema.names:
            times[chunk.entity_path] += batch.column("wall_time").cast(pa.int64()).to_pylist()
    return times


def test_sim_episode_view_save(tmp_path: Path, domain_id: int) -> None:
    """`flow2one demo --view-save`: the view node, in its own process, records every chosen chunk (32 steps)
    with its M candidates, every cloud (4,096 points), both cameras and the executed path."""
    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    rrd = tmp_path / "episode.rrd"
    args = p.parse_args(["--model-dir", str(ROOT / "models" / "sim_student"), "--tasks", "reach_around",
                         "--episodes", "1", "--episode-s", "3.0", "--domain-id", str(domain_id),
                         "--out", str(tmp_path / "demo"), "--view-save", str(rrd)])
    assert demo.main(args) == 0
    task = json.loads((tmp_path / "demo" / "summary.json").read_text())["tasks"]["reach_around"]
    published = task["graph"]["policy_counts"]["chunks"]
    rows, sizes, timelines = read_rrd(rrd)

    # the policy published its candidates with each chunk (--view sets markers_every 1); the view, in a process
    # of its own, has every one of the episode's (the episode waits for it to match) and may miss those sent
    # while it still discovered the graph, or the last one as the graph stops
    in_episode = task["per_episode"][0]["chunks"]
    assert max(1, in_episode - 1) <= rows["/world/policy/chosen"] <= published and published > 0
    assert rows["/world/policy/candidates"] == rows["/world/policy/chosen"]
    assert all(s == [spec.HORIZON] for s in sizes["/world/policy/chosen"])
    assert all(s == [spec.HORIZON] * 4 for s in sizes["/world/policy/candidates"])  # sim.yaml n_candidates 4
    assert rows["/world/cloud"] >= 3 and set(sizes["/world/cloud"]) == {spec.N_POINTS}
    wall = task["per_episode"][0]["wall_s"]
    for cam in ("front", "wrist"):
        for stream in ("color", "depth"):
            n = rows[f"/cameras/{cam}/{stream}"]
            assert 1 <= n <= DEMO_IMAGE_HZ * (wall + 120), (cam, stream, n)  # the demo logs <= 5 Hz
    assert rows["/world/ee/now"] > 10 and rows["/world/ee/path"] > 1
    assert rows["/plots/robot/gripper_width"] > 10
    assert rows["/plots/timing/obs_to_view_ms"] == rows["/world/policy/chosen"]
    assert all(v > 0 for v in sizes["/plots/timing/obs_to_view_ms"])
    # the control path's own timing, from /diagnostics: chunk -> command (executor), observation age (policy)
    assert rows["/plots/timing/chunk_to_command_ms"] >= 1 and rows["/plots/timing/obs_age_ms"] >= 1
    assert all(0 < v < 5000 for v in sizes["/plots/timing/obs_age_ms"])
    assert rows["/events/task"] >= 1  # the episode's start (and outcome)
    assert rows["/events/safety"] >= 1  # the executor's state changes (idle -> running ...)
    assert {"wall_time", "sim_time"} <= timelines["/world/cloud"]


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_runtime import exported_student  # one random tiny student per session, shared

    return exported_student(tmp_path_factory)


def test_replay_view_save_records_the_bag_from_its_start(tmp_path: Path, student_dir: Path, domain_id: int) -> None:
    """`flow2one replay BAG --view-save`: the view, in the replay's process, records the bag from its first
    cloud on (the replay once started playing before the view subscribed: a short bag left a recording with
    little or nothing in it), every chunk (32 steps) with its candidates, each on the bag's own clock."""
    from flow2one.data.bags import read_messages
    from flow2one.data.cdr import deserialize
    from flow2one.nodes.view import ViewParams, _Gate
    from flow2one.ros.convert import stamp_to_ns
    from tests.test_convert_bags import make_bag

    bag = make_bag(tmp_path / "episode_00000.mcap", seconds=2.0)
    clouds = sorted(stamp_to_ns(deserialize(m.data, m.msgtype).header.stamp) for m in read_messages(bag)
                    if m.topic == spec.POINTS_TOPIC)
    gate = _Gate(ViewParams().max_cloud_hz)  # the view logs at most 10 clouds/s of the bag's 15
    expected_clouds = [t for t in clouds if gate("cloud", t)]
    rrd, out = tmp_path / "replay.rrd", tmp_path / "metrics.json"
    assert cli_main(["replay", str(bag), "--rate", "0", "--republish-points", "--model-dir", str(student_dir), "--out", str(out),
                     "--domain-id", str(domain_id), "--view-save", str(rrd)]) == 0
    m = json.loads(out.read_text())
    rows, sizes, timelines = read_rrd(rrd)
    times = wall_times(rrd)

    assert times["/world/cloud"][0] == clouds[0]  # the bag's first cloud: the view was there before playing
    # clouds are a sensor stream (keep-last 2): a view that lags under load may drop one mid-bag, not its start
    assert set(times["/world/cloud"]) <= set(clouds) and len(times["/world/cloud"]) >= len(expected_clouds) - 2
    assert set(sizes["/world/cloud"]) == {spec.N_POINTS}
    # every chunk the replay scored (the view's queue keeps 20; one sent while the graph stops may be cut)
    assert m["chunks"] >= 5 and rows["/world/policy/chosen"] >= m["chunks"] - 1
    assert all(s == [spec.HORIZON] for s in sizes["/world/policy/chosen"])
    assert rows["/world/policy/candidates"] == rows["/world/policy/chosen"]
    assert all(s == [spec.HORIZON] * 4 for s in sizes["/world/policy/candidates"])  # replay.yaml n_candidates 4
    assert rows["/world/ee/now"] >= 10 and rows["/plots/robot/gripper_width"] >= 10
    # the bag's clock everywhere: no row at time 0 (a view clock read before the first /clock)
    start, end = clouds[0] - 10**9, clouds[-1] + 10**9
    assert all(start <= t <= end for entity, ts in times.items() for t in ts), {
        e: (min(ts), max(ts)) for e, ts in times.items() if ts}
    assert rows["/plots/timing/obs_to_view_ms"] >= 1 and "wall_time" in timelines["/world/policy/chosen"]


def test_view_node_before_the_clock_and_with_a_bad_message(tmp_path: Path, ros_context) -> None:
    """On sim time before the first /clock the view logs a chunk at its stamp and nothing at time 0; a
    message it cannot translate is logged and counted, not raised into the executor (which it would stop)."""
    import numpy as np
    from rclpy.parameter import Parameter
    from trajectory_msgs.msg import JointTrajectory

    from flow2one.nodes.view import ViewNode
    from flow2one.ros.convert import chunk_to_msg

    rrd = tmp_path / "v.rrd"
    node = ViewNode(context=ros_context, parameter_overrides=[
        Parameter("live", value=False), Parameter("save", value=str(rrd)), Parameter("use_sim_time", value=True)])
    try:
        assert node.get_clock().now().nanoseconds == 0  # no /clock yet
        stamp = 1_700_000_000 * 10**9
        node._handle(spec.CHUNK_TOPIC, chunk_to_msg(np.zeros((spec.HORIZON, spec.ACTION_DIM)), stamp))
        node._handle(spec.CHUNK_TOPIC, JointTrajectory())  # no joint names, no points
        assert node.errors == 1 and node.view.counts["chunks"] == 1
    finally:
        node.close()
        node.destroy_node()
    rows, sizes, _ = read_rrd(rrd)
    assert rows["/world/policy/chosen"] == 1 and sizes["/world/policy/chosen"] == [[spec.HORIZON]]
    assert wall_times(rrd)["/world/policy/chosen"] == [stamp]
    assert "/plots/timing/obs_to_view_ms" not in rows  # no latency from a clock that has not started


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, Path]:
    """(a teleop episode bag, the dataset episode `flow2one convert` made of it, with the front camera)."""
    from flow2one.data.convert_bags import ConvertConfig, convert_directory
    from tests.test_convert_bags import make_bag

    d = tmp_path_factory.mktemp("view")
    bag = make_bag(d / "bags" / "episode_00000.mcap", seconds=1.0)
    (report,) = convert_directory(d / "bags", d / "data", ConvertConfig(cameras=("front",), image_size=(32, 24)),
                                  progress=False)
    return bag, d / "data" / report.episode


def test_view_opens_a_converted_dataset_episode(converted, tmp_path: Path) -> None:
    from flow2one.data.episodes import read_episode

    ep_path = converted[1]
    ep = read_episode(ep_path)
    out = tmp_path / "ep.rrd"
    assert cli_main(["view", str(ep_path), "--save", str(out), "--no-viewer"]) == 0
    rows, sizes, timelines = read_rrd(out)
    T = len(ep)
    for entity in ("/world/cloud", "/world/ee/now", "/cameras/front/color", "/cameras/front/depth",
                   "/plots/robot/gripper_width", "/plots/robot/gripper_commanded", "/world/ee/commanded"):
        assert rows[entity] == T, entity
    assert set(sizes["/world/cloud"]) == {spec.N_POINTS}
    assert sizes["/world/demo/actions"] == [[T]]  # the recorded action path, whole
    assert "sim_time" in timelines["/world/cloud"]


def test_view_opens_a_bag_through_the_view_node_translation(converted, tmp_path: Path) -> None:
    """The bag's messages go through TopicView, as the live node's do: each cloud, camera frame, pose."""
    from flow2one.data.bags import read_messages

    bag = converted[0]
    counts = Counter(m.topic for m in read_messages(bag))
    out = tmp_path / "bag.rrd"
    assert cli_main(["view", str(bag), "--save", str(out), "--no-viewer"]) == 0
    rows, sizes, _ = read_rrd(out)
    assert rows["/world/cloud"] == counts[spec.POINTS_TOPIC] and set(sizes["/world/cloud"]) == {spec.N_POINTS}
    assert rows["/cameras/front/color"] == counts[spec.camera_topics("front")["color"]]
    assert rows["/world/ee/now"] == counts[spec.EE_POSE_TOPIC]
    assert rows["/plots/robot/gripper_commanded"] == rows["/world/ee/commanded"] == counts[spec.COMMAND_TOPIC]


def test_view_refuses_what_it_cannot_open(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("x")
    assert cli_main(["view", str(tmp_path / "notes.txt"), "--no-viewer"]) == 2
    assert cli_main(["view", str(tmp_path / "missing.npz"), "--no-viewer"]) == 2
    bad = tmp_path / "episode_00000.npz"
    bad.write_bytes(b"not an npz")
    assert cli_main(["view", str(bad), "--save", str(tmp_path / "x.rrd"), "--no-viewer"]) == 1
    err = capsys.readouterr().err
    assert "expected an episode .npz" in err and "does not exist" in err and "not a readable" in err
    assert bad.read_bytes() == b"not an npz"  # the input is left as it was


def test_view_switch_is_off_by_default() -> None:
    """The switch adds nothing to a run unless asked; asked, it adds the node and the policy's markers."""
    from flow2one.view.switch import add_view_arguments, with_view

    p = argparse.ArgumentParser()
    add_view_arguments(p)
    off = p.parse_args([])
    assert with_view(off, ["policy", "executor"], {"policy": {"rate_hz": 2.0}}) == (
        ["policy", "executor"], {"policy": {"rate_hz": 2.0}})
    on = p.parse_args(["--view-save", "x.rrd"])
    nodes, ov = with_view(on, ["policy"], {"policy": {"markers_every": 3}})
    assert nodes == ["policy", "view"] and ov["policy"]["markers_every"] == 3
    assert ov["view"]["live"] is False and ov["view"]["save"].endswith("x.rrd") and Path(ov["view"]["save"]).is_absolute()
    # the view runs on the graph's clock: the bag's in the replay graph (replay.yaml's use_sim_time), wall time else
    assert with_view(on, ["policy"], {}, graph_name="replay")[1]["view"]["use_sim_time"] is True
    assert "use_sim_time" not in with_view(on, ["policy"], {}, graph_name="sim")[1]["view"]


def test_sim_eval_logs_from_its_loop(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """sim-eval has no graph: its rollout loop logs the same entities, on the sim clock."""
    out = tmp_path / "eval.rrd"
    assert cli_main(["sim-eval", "--task", "reach_around", "--episodes", "1", "--strips", "0",
                     "--out", str(tmp_path / "eval"), "--view-save", str(out)]) == 0
    steps = json.loads((tmp_path / "eval" / "summary.json").read_text())["reach_around"]["per_episode"][0]["steps"]
    rows, _, timelines = read_rrd(out)
    assert steps > 0 and rows["/world/ee/now"] == rows["/plots/robot/gripper_commanded"] \
        == rows["/world/ee/commanded"]  # one row per step
    if "robot link lost" in capsys.readouterr().err:  # a starved machine: the episode ran again on a new world,
        assert rows["/world/ee/now"] > steps          # and the view kept the steps of the lost attempt too
    else:
        assert rows["/world/ee/now"] == steps
        assert rows["/cameras/front/color"] == -(-steps // 4)  # every 4th step rendered for the view
    assert rows["/events/task"] >= 1 and {"sim_time", "wall_time"} <= timelines["/world/ee/now"]
