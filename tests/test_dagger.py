"""DAgger data (`flow2one sim-demos --dagger-policy`): a policy's own states, labelled by the expert."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flow2one.control.config import ExecutorConfig
from flow2one.data.episodes import Episode, EpisodeMeta, list_episodes, read_episode, write_episode
from flow2one.data.windows import episode_windows, load_windows
from flow2one.paths import repo_root
from flow2one.sim.demos import generate_dagger, relabel
from flow2one.sim.experts import ChaseExpert
from flow2one.sim.rollout import Recording
from flow2one.sim.tasks import CUBE_HALF, make_task
from flow2one.spec import ACTION_DIM, GRIPPER_CLOSED, GRIPPER_OPEN, HORIZON, N_POINTS

LEAD_S = 0.18
CAP = ChaseExpert.SPEED * LEAD_S  # the farthest a lead label is from the TCP


def _drift_toward(target: np.ndarray, pucks: np.ndarray, steps: int = 12) -> Recording:
    """A track recording whose TCP drifts from between the pucks toward `target`."""
    rec = Recording()
    start = np.array([0.5, 0.0, 0.2])
    for k in range(steps):
        tcp = start + (target - start) * 0.05 * k
        rec.proprio.append(np.r_[tcp, np.zeros(6), 0.08].astype(np.float32))
        rec.info.append({"tcp": tcp, "pucks": pucks, "puck_vel": np.zeros_like(pucks)})
    return rec


def test_relabel_keeps_the_mode_the_policy_pursued() -> None:
    task = make_task("track")
    pucks = np.array([[0.55, 0.2, 0.02], [0.55, -0.2, 0.02]])
    for pursued in (0, 1):
        rec = _drift_toward(pucks[pursued], pucks)
        labels, _, mode = relabel(task, rec, -1, LEAD_S)
        assert mode == pursued  # the task saw no mode: the one the arm was heading for
        tcp = np.stack(rec.proprio)[:, :3]
        lead = labels[:, :3] - tcp
        assert np.linalg.norm(lead, axis=1).max() <= CAP + 1e-6
        assert (np.sign(lead[:, 1]) == np.sign(pucks[pursued, 1])).all()  # every label toward that puck
        other, _, forced = relabel(task, rec, 1 - pursued, LEAD_S)  # the task saw a mode: that one is labelled
        assert forced == 1 - pursued and (np.sign(other[:, 1] - tcp[:, 1]) == np.sign(pucks[1 - pursued, 1])).all()


def _grasp_then_carry(width_held: float) -> tuple[Recording, np.ndarray, np.ndarray]:
    """A pick_place recording: down onto cube 0's grasp point, fingers closed to `width_held`, then up and over
    to the pad; after the close the cube is found 3 cm along y from where it was (pushed by the fingers)."""
    cubes, pad = np.array([[0.5, 0.15, CUBE_HALF], [0.5, -0.15, CUBE_HALF]]), np.array([0.65, 0.0, 0.0])
    grasp = np.array([0.5, 0.15, CUBE_HALF - 0.005])
    path = [grasp + [0, 0, 0.1 - 0.01 * k] for k in range(11)] + [grasp] * 10  # down, then close in place
    widths = [GRIPPER_OPEN] * 11 + list(np.linspace(GRIPPER_OPEN, width_held, 6)) + [width_held] * 4
    up = [grasp + [0.0, 0.0, 0.01 * k] for k in range(1, 11)]
    over = [up[-1] + (np.r_[pad[:2], up[-1][2]] - up[-1]) * k / 10 for k in range(1, 11)]
    path, widths = path + up + over, widths + [width_held] * 20
    moved = cubes + [[0.0, 0.03, 0.0], [0.0, 0.0, 0.0]]
    rec = Recording()
    for k, (tcp, w) in enumerate(zip(path, widths)):
        rec.proprio.append(np.r_[tcp, np.zeros(6), w].astype(np.float32))
        rec.info.append({"tcp": tcp, "cubes": cubes if k <= 16 else moved, "pad": pad})
    return rec, moved[0], pad


def test_relabel_of_a_missed_grasp_says_open_and_go_back_to_the_cube() -> None:
    """The fingers closed on nothing (width under half a cube): from then on every label opens the hand and
    heads for the cube where it now lies, not for the pad the policy carried its empty hand to. Holding a
    cube, the same path is labelled on to the pad with the hand closed."""
    task = make_task("pick_place")
    rec, cube, pad = _grasp_then_carry(0.0)
    labels, _, mode = relabel(task, rec, 0, 0.08)
    after = labels[22:]  # the empty hand rises and crosses to the pad
    assert mode == 0 and (after[:, 9] == GRIPPER_OPEN).all()
    tcp = np.stack(rec.proprio)[22:, :3]
    to_cube = np.linalg.norm(labels[22:, :2] - cube[:2], axis=1) < np.linalg.norm(tcp[:, :2] - cube[:2], axis=1)
    assert to_cube[10:].all()  # over to the pad: every label points back toward the cube (x-y)
    assert (labels[22:31, 1] - tcp[:9, 1] > 0.005).all()  # rising: toward where the cube lies now, 3 cm along y
    held, _, _ = relabel(task, _grasp_then_carry(2 * CUBE_HALF)[0], 0, 0.08)
    assert (held[22:, 9] == GRIPPER_CLOSED).all()
    assert np.linalg.norm(held[-1, :2] - pad[:2]) < np.linalg.norm(held[22, :2] - pad[:2])


def test_dagger_episode_holds_the_policys_states_with_expert_labels(tmp_path: Path) -> None:
    """The shipped student drives track at 10 re-plans/s through the deployed loop; what is written is what a
    training run reads: its states, clouds made by the sim pointcloud pipeline, and lead labels in one mode."""
    out = tmp_path / "track"
    report = generate_dagger("track", out, 1, repo_root() / "models" / "sim_student", LEAD_S, seed=900,
                             progress=False)
    (path,) = list_episodes(out)
    ep = read_episode(path)
    assert report["episodes"] == 1 and report["policy_success_rate"] == float(ep.meta.success)
    assert ep.meta.source == "sim-dagger" and ep.meta.mode in (0, 1) and ep.meta.seed == 900
    assert ep.points.shape == (len(ep.t), N_POINTS, 3) and np.isfinite(ep.points).all()
    lead = np.linalg.norm(ep.action[:, :3] - ep.proprio[:, :3], axis=1)
    assert lead.max() <= CAP + 1e-5 and np.median(lead) > 0.01  # labels that move the arm, within the cap
    assert ep.action_chunk.shape == (len(ep.t), HORIZON, ACTION_DIM)
    assert np.array_equal(ep.action_chunk[:, 0], ep.action)  # each plan starts with the state's own label
    windows = load_windows(out, stride=8, history_steps=4)
    assert len(windows["proprio"]) > 0 and np.array_equal(windows["action"], ep.action_chunk[::8])


def _hover_off_the_cube(steps: int = 40) -> tuple[Recording, np.ndarray]:
    """A pick_place recording: the arm comes down 2.5 cm off cube 0 in x and hovers 4 cm up, the hand open
    (the DAgger students' failure, results/replan/README.md, twenty-first stop)."""
    cubes, pad = np.array([[0.5, 0.15, CUBE_HALF], [0.5, -0.15, CUBE_HALF]]), np.array([0.65, 0.0, 0.0])
    path = [np.array([0.525, 0.15, 0.12 - 0.01 * k]) for k in range(9)] + [np.array([0.525, 0.15, 0.04])] * steps
    rec = Recording()
    for tcp in path:
        rec.proprio.append(np.r_[tcp, np.zeros(6), GRIPPER_OPEN].astype(np.float32))
        rec.info.append({"tcp": tcp, "cubes": cubes, "pad": pad})
    return rec, cubes[0]


def test_dagger_chunk_labels_of_a_hovering_arm_go_down_onto_the_cube_and_close() -> None:
    """Where the policy hovers off the cube, the labels of the states that follow say "1 cm toward it, hand
    open" again and again; each state's chunk label must instead be a grasp: down onto the cube (within half a
    cube in x-y of its centre, below its top) and the hand closed, within the chunk."""
    rec, cube = _hover_off_the_cube()
    per_step, chunks, mode = relabel(make_task("pick_place"), rec, 0, 0.08)
    assert mode == 0 and chunks.shape == (len(rec.proprio), HORIZON, ACTION_DIM)
    assert np.array_equal(chunks[:, 0], per_step)
    assert (per_step[:, 9] == GRIPPER_OPEN).all()  # the path the policy took: its labels never close
    for t in range(9, len(rec.proprio)):
        shut = np.flatnonzero(chunks[t, :, 9] < ExecutorConfig.gripper_close_below)  # the executor grasps
        assert len(shut), f"state {t}: its chunk label never closes the hand"
        at = chunks[t, shut[0], :3]
        assert (np.abs(at[:2] - cube[:2]) < CUBE_HALF / 2).all() and at[2] < 2 * CUBE_HALF, (t, at)


def test_windows_take_each_steps_own_chunk_label(tmp_path: Path) -> None:
    """With chunk labels a window's label is its step's chunk (held past the chunk's end, and from the event
    on as per-step labels are), written and read back unchanged; a chunk of the wrong shape is refused."""
    T, H = 10, 4
    t = np.arange(T) * 0.05
    proprio = np.zeros((T, 10), np.float32)
    chunk = np.zeros((T, H, ACTION_DIM), np.float32)
    chunk[..., 0] = 100 * np.arange(T)[:, None] + np.arange(H)  # step t, offset j -> 100 t + j
    points = np.zeros((T, N_POINTS, 3), np.float32)
    ep = Episode(EpisodeMeta(task="t", source="unit", success=True), t, proprio, proprio.copy(), points,
                 action_chunk=chunk)
    read = read_episode(write_episode(tmp_path, 0, ep))
    assert np.array_equal(read.action_chunk, chunk)
    x = episode_windows(read, horizon=6)["action"][..., 0]
    assert np.array_equal(x[8], [800, 801, 802, 803, 803, 803])  # past the episode's end the plan goes on
    read.meta.event_t = 0.25  # step 5
    x = episode_windows(read, horizon=6)["action"][..., 0]
    assert np.array_equal(x[3], [300, 301, 301, 301, 301, 301])
    assert np.array_equal(x[6], [600, 601, 602, 603, 603, 603])
    with pytest.raises(ValueError, match="action_chunk has shape"):
        Episode(ep.meta, t, proprio, proprio.copy(), points, action_chunk=chunk[:, :, :9])
