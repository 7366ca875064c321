"""DAgger data (`flow2one sim-demos --dagger-policy`): a policy's own states, labelled by the expert."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flow2one.data.episodes import list_episodes, read_episode
from flow2one.data.windows import load_windows
from flow2one.paths import repo_root
from flow2one.sim.demos import generate_dagger, relabel
from flow2one.sim.experts import ChaseExpert
from flow2one.sim.rollout import Recording
from flow2one.sim.tasks import CUBE_HALF, make_task
from flow2one.spec import GRIPPER_CLOSED, GRIPPER_OPEN, N_POINTS

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
        labels, mode = relabel(task, rec, -1, LEAD_S)
        assert mode == pursued  # the task saw no mode: the one the arm was heading for
        tcp = np.stack(rec.proprio)[:, :3]
        lead = labels[:, :3] - tcp
        assert np.linalg.norm(lead, axis=1).max() <= CAP + 1e-6
        assert (np.sign(lead[:, 1]) == np.sign(pucks[pursued, 1])).all()  # every label toward that puck
        other, forced = relabel(task, rec, 1 - pursued, LEAD_S)  # the task saw a mode: that one is labelled
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
    labels, mode = relabel(task, rec, 0, 0.08)
    after = labels[22:]  # the empty hand rises and crosses to the pad
    assert mode == 0 and (after[:, 9] == GRIPPER_OPEN).all()
    tcp = np.stack(rec.proprio)[22:, :3]
    to_cube = np.linalg.norm(labels[22:, :2] - cube[:2], axis=1) < np.linalg.norm(tcp[:, :2] - cube[:2], axis=1)
    assert to_cube[10:].all()  # over to the pad: every label points back toward the cube (x-y)
    assert (labels[22:31, 1] - tcp[:9, 1] > 0.005).all()  # rising: toward where the cube lies now, 3 cm along y
    held, _ = relabel(task, _grasp_then_carry(2 * CUBE_HALF)[0], 0, 0.08)
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
    windows = load_windows(out, stride=8, history_steps=4)
    assert len(windows["proprio"]) > 0 and np.isfinite(windows["action"]).all()
