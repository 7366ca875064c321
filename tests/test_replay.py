"""Replay testing: open-loop metrics, and a recorded bag played into the replay graph (real policy node,
real ONNX Runtime) producing the metrics JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flow2one import spec
from flow2one.cli import main as cli_main
from flow2one.data.replay import OpenLoopMetrics, recorded_actions, replay_messages
from flow2one.geometry import matrix_to_rot6d
from tests.test_convert_bags import make_bag

torch.set_num_threads(1)
NS = 1_000_000_000
R = matrix_to_rot6d(np.diag([1.0, -1.0, -1.0]))


def _actions(x: np.ndarray) -> np.ndarray:
    return np.stack([np.r_[xi, 0.0, 0.3, R, 0.08] for xi in x])


def test_metrics_measure_distance_switches_and_latency() -> None:
    rec_t = np.arange(0, 100) * int(0.05 * NS)  # 5 s of commands, x moving 10 cm/s
    rec = _actions(0.4 + 0.1 * rec_t / NS)
    perfect = OpenLoopMetrics(rec_t, rec)
    published = {}
    for k in range(0, 60, 4):
        t = rec_t[k] + np.arange(spec.HORIZON) * int(0.05 * NS)
        frame = rec_t[k] + 1  # the camera frame came 1 ns after the state, went out at k ms, its chunk 4 ms later
        published[frame] = k * 1_000_000
        perfect.add_frame(rec_t[k], frame)
        perfect.add_chunk(rec_t[k], 0.05, _actions(0.4 + 0.1 * t / NS), latency_s=0.01,
                          received_ns=(k + 4) * 1_000_000)
    perfect.add_chunk(rec_t[61], 0.05, rec[61:61 + spec.HORIZON], latency_s=None, received_ns=0)  # no trace for it
    published[rec_t[0]] = 2_000_000  # the first state went out 2 ms after its frame: that observation waited on it
    r = perfect.result(published)
    assert r["frame_to_chunk_ms"]["n"] == 15 and r["frame_to_chunk_ms"]["max"] == pytest.approx(4.0)
    obs = r["observation_to_chunk_ms"]
    assert obs["n"] == 15 and obs["mean"] == pytest.approx((14 * 4.0 + 2.0) / 15) and obs["max"] == pytest.approx(4.0)
    assert r["chunks"] == r["chunks_compared"] == 16
    assert r["position_error_m"]["max"] < 1e-9 and r["rotation_error_rad"]["max"] < 1e-6
    assert r["mode_switches"]["count"] == 0 and r["latency_ms"]["median"] == pytest.approx(10.0)

    hopping = OpenLoopMetrics(rec_t, rec)  # alternate between two modes 8 cm apart
    for i, k in enumerate(range(0, 60, 4)):
        t = rec_t[k] + np.arange(spec.HORIZON) * int(0.05 * NS)
        hopping.add_chunk(rec_t[k], 0.05, _actions(0.4 + 0.1 * t / NS + (0.08 if i % 2 else 0.0)), None)
    r = hopping.result()
    assert r["mode_switches"]["count"] == 14 and r["mode_switches"]["pairs_compared"] == 14
    assert r["position_error_m"]["mean"] == pytest.approx(0.08 * 7 / 15, abs=1e-6)  # 7 of 15 chunks off by 8 cm
    assert r["position_error_m"]["max"] == pytest.approx(0.08, abs=1e-6) and r["latency_ms"] == {"n": 0}
    with pytest.raises(ValueError, match="chunk actions"):
        hopping.add_chunk(0, 0.05, np.zeros((3, 4)), None)


def test_replay_selection_and_recorded_actions(tmp_path: Path) -> None:
    bag = make_bag(tmp_path / "episode_00000.mcap", seconds=1.0)
    topics = {m.topic for m in replay_messages(bag)}
    assert spec.COMMAND_TOPIC not in topics and spec.POINTS_TOPIC not in topics
    assert spec.EE_POSE_TOPIC in topics and spec.camera_topics("front")["depth"] in topics
    assert spec.POINTS_TOPIC in {m.topic for m in replay_messages(bag, republish_points=True)}
    stamps, actions = recorded_actions(bag)
    assert len(stamps) == 21 and actions.shape == (21, spec.ACTION_DIM) and np.all(np.diff(stamps) > 0)
    nocmd = make_bag(tmp_path / "episode_00001.mcap", seconds=1.0, drop={spec.COMMAND_TOPIC})
    with pytest.raises(ValueError, match="recorded commands"):
        recorded_actions(nocmd)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_runtime import exported_student  # one random tiny student per session, shared

    return exported_student(tmp_path_factory)


def test_replay_cli_lockstep_writes_metrics_json(tmp_path: Path, student_dir: Path, domain_id: int) -> None:
    bag = make_bag(tmp_path / "episode_00000.mcap", seconds=2.0)
    out = tmp_path / "metrics.json"
    rc = cli_main(["replay", str(bag), "--rate", "0", "--republish-points", "--model-dir", str(student_dir),
                   "--out", str(out), "--domain-id", str(domain_id)])
    assert rc == 0
    m = json.loads(out.read_text())
    print(f"\nreplay lock-step: {m['chunks']} chunks, {m['lockstep_timeouts']} step timeouts, latency median "
          f"{m['latency_ms'].get('median', float('nan')):.1f} ms")
    assert m["rate"] == 0 and m["task"] == "push" and m["recorded_actions"] == 41
    # lock-step: one chunk (at least) per recorded cloud (15 Hz over 2 s), all scored against the recording
    assert m["chunks"] >= 25 and m["chunks_compared"] >= 25
    assert m["lockstep_timeouts"] <= 1  # frames before the first robot state are not waited for
    assert m["position_error_m"]["n"] >= 25 and m["position_error_m"]["median"] > 0  # random weights
    assert 0 < m["latency_ms"]["median"] < 2000 and m["latency_ms"]["n"] >= 25
    # the policy's trace names each chunk's frame
    assert m["frame_to_chunk_ms"]["n"] >= 25 and 0 < m["frame_to_chunk_ms"]["median"] < 2000
    obs = m["observation_to_chunk_ms"]  # from the later of frame and state: never longer than from the frame
    assert obs["n"] == m["frame_to_chunk_ms"]["n"] and 0 < obs["median"] <= m["frame_to_chunk_ms"]["median"]
    assert 0 <= m["machine"]["cpu_steal_pct"] <= 100  # what the host took during the replay
    assert set(m["mode_switches"]) == {"count", "pairs_compared", "threshold_m", "per_minute"}


def test_replay_refuses_bad_bag(tmp_path: Path, student_dir: Path, domain_id: int, capsys) -> None:
    broken = tmp_path / "episode_00000.mcap.part"
    broken.write_bytes(b"\x89MCAP0\r\n")
    assert cli_main(["replay", str(broken), "--model-dir", str(student_dir), "--domain-id", str(domain_id)]) == 1
    assert "recover-bag" in capsys.readouterr().err
