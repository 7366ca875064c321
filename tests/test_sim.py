"""The sim world through the real stack: franky-sim (MuJoCo FR3) served over libfranka, driven by franky.

Each task: the scripted expert succeeds in the mode it chose, and a deliberately wrong behaviour fails
(the mean of the two modes for the static tasks, a late-reacting expert for the dynamic ones).
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import pytest

from flow2one.control.config import ExecutorConfig
from flow2one.control.franky_robot import FrankyRobot
from flow2one.runtime.backends import Backend
from flow2one.runtime.card import load_card
from flow2one.runtime.policy_step import PolicyStep
from flow2one.sim.cameras import SIM_CALIBRATION, SimCameras, make_cloud_pipeline
from flow2one.sim.experts import make_expert
from flow2one.sim.rollout import (
    ExpertController,
    PolicyController,
    Recording,
    home,
    mode_rng,
    run_episode,
    send_target,
)
from flow2one.sim.tasks import CUBE_HALF, TASKS, PickPlace, PopUp, TaskStatus, make_task
from flow2one.sim.world import SimWorld, WorldConfig
from flow2one.spec import ACTION_DIM, HORIZON, N_POINTS, STEP_DT
from tests.helpers import wait_for


@contextlib.contextmanager
def sim_robot(world: SimWorld):
    """The executor's franky adapter on the world's franky-sim, disconnected before the world stops."""
    robot = FrankyRobot(world.hostname, SIM_EXECUTOR.limits(), gripper_period_s=0.0, realtime="ignore")
    try:
        yield robot
    finally:
        robot.disconnect()


SIM_EXECUTOR = ExecutorConfig(robot_host="127.0.0.1", n_exec=8, command_rate_hz=20.0, lookahead_s=0.05,
                              stop_after_s=2.0)


class SinkBackend(Backend):
    """A test policy: every candidate is a chunk `dz` below wherever the arm is (after `delay` s)."""

    def __init__(self, card, dz: float, delay: float = 0.0) -> None:
        super().__init__(card)
        self.dz, self.delay, self.seen = dz, delay, []

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self.seen.append({k: v.shape for k, v in feeds.items()})
        time.sleep(self.delay)
        b, m, h, a = feeds["noise"].shape
        chunk = np.broadcast_to(feeds["proprio"][:, None, None, :], (b, m, h, a)).copy()
        chunk[..., 2] += self.dz
        return chunk


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


# (task, seed, wrong-expert kwargs, sim seconds the wrong episode may take)
CASES = [
    ("reach_around", 11, {"average": True}, 4.0),
    ("pick_place", 12, {"average": True}, 5.0),
    ("track", 13, {"delay": 0.5}, 4.0),
    ("pop_up", 14, {"delay": 1.0}, 4.3),
]


@pytest.mark.parametrize("task,seed,wrong,wrong_time", CASES, ids=[c[0] for c in CASES])
def test_expert_succeeds_and_wrong_behaviour_fails(task, seed, wrong, wrong_time):
    with SimWorld(WorldConfig(task=task)) as world, sim_robot(world) as arm:
        expert = make_expert(task)
        ok = run_episode(world, arm, ExpertController(expert), seed)
        assert ok.success, ok
        assert ok.mode == ok.chosen_mode and ok.mode_name == TASKS[task].modes[ok.chosen_mode]
        assert 0 < ok.time_to_success < TASKS[task].time_limit
        bad = run_episode(world, arm, ExpertController(make_expert(task, **wrong)), seed, max_time=wrong_time)
        assert not bad.success, bad
        if task == "reach_around":  # straight between the two ways around = through the pillar
            assert bad.failed and "collision" in bad.reason
        if task == "pop_up":  # 1 s late: the pucks are gone before the gripper is down on one
            assert bad.failed and "sank" in bad.reason
            # Reaction: the expert sends the arm toward a puck within a few control steps of the pop, the
            # expert acting on 1 s old state not before that second has passed.
            assert ok.reaction_s is not None and 0 <= ok.reaction_s < 0.2, ok
            assert bad.reaction_s is None or bad.reaction_s >= 1.0, bad
        else:
            assert ok.reaction_s is None and bad.reaction_s is None  # no event, no reaction


def test_expert_lead_labels_depend_only_on_what_the_observation_shows():
    """With lead_s the recorded target is the measured TCP plus at most speed * lead_s toward the goal: two
    experts that got to the same state along different paths record the same label. The carrot does not:
    its lead is the expert's own history, which a policy re-planning every 0.1 s cannot see."""
    rng = np.random.default_rng(0)
    track = {"pucks": [[0.55, 0.1, 0.02], [0.5, -0.15, 0.02]], "puck_vel": [[0.1, 0.0, 0.0], [0.0, 0.1, 0.0]]}
    reach = {"pillar": [0.5, 0.0, 0.1], "goal": [0.65, 0.0, 0.1]}
    for task, info in (("track", track), ("reach_around", reach)):
        now = np.r_[0.45, 0.02, 0.2, np.zeros(6), 0.08]  # the state both experts reach
        labels = {}
        for lead in (0.18, None):
            acts = []
            for start in ([0.4, 0.0, 0.3], [0.6, 0.2, 0.15]):  # two histories
                e = make_expert(task, mode=0, lead_s=lead)
                e.reset(make_task(task), {**info, "tcp": np.array(start)}, rng)
                for k in range(5):
                    e.act(np.r_[np.add(start, (now[:3] - start) * k / 5), now[3:]], {**info, "tcp": start})
                acts.append(e.act(now, {**info, "tcp": now[:3]}))
            labels[lead] = acts
        same, carrot = labels[0.18], labels[None]
        np.testing.assert_array_equal(same[0], same[1])
        assert np.linalg.norm(same[0][:3] - now[:3]) <= 0.45 * 0.18 + 1e-9  # at most the fastest speed * lead
        assert np.linalg.norm(carrot[0][:3] - carrot[1][:3]) > 0.01, task
    with pytest.raises(ValueError, match="lead_s"):
        make_expert("track", lead_s=0.0)


def test_dart_sends_a_smooth_offset_and_records_the_clean_target():
    """DART demos: the arm is sent the expert's target plus a smooth random offset of the configured std, and
    the recorded label is the expert's own target, untouched; the offset is the episode rng's, so a seed
    reproduces its demo. Without noise the expert's target is what is sent."""
    from types import SimpleNamespace

    class Straight:  # an expert moving along x at 10 cm/s
        def reset(self, task, info, rng) -> int:
            self.k = 0
            return 0

        def act(self, proprio, info) -> np.ndarray:
            self.k += 1
            return np.r_[0.4 + 0.005 * self.k, 0.0, 0.2, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.08]

        def at_grasp(self) -> bool:  # its steps 1000-1399 (k counts the steps act has taken)
            return 1000 <= self.k < 1400

    class Arm:  # records what franky would be sent
        def __init__(self) -> None:
            self.sent = []

        def send(self, cmd) -> None:
            self.sent.append(np.r_[cmd.position, cmd.rotation[:, 0], cmd.rotation[:, 1], cmd.gripper])

    world = SimpleNamespace(task=None, info=dict)
    obs = SimpleNamespace(proprio=np.zeros(10), info={}, sim_t=0.0)

    def drive(noise: float, seed: int, steps: int = 4000) -> tuple[np.ndarray, np.ndarray]:
        arm, ctl = Arm(), ExpertController(Straight(), dart_noise_m=noise)
        ctl.reset(world, arm, np.random.default_rng(seed))
        labels = np.stack([ctl.act(obs) for _ in range(steps)])
        return labels, np.stack(arm.sent)

    clean, sent = drive(0.0, 1)
    np.testing.assert_array_equal(sent, clean)
    labels, sent = drive(0.02, 1)
    np.testing.assert_array_equal(labels, clean)  # the label is the expert's target
    off = sent[:, :3] - labels[:, :3]
    np.testing.assert_array_equal(sent[:, 3:], labels[:, 3:])  # rotation and gripper as the expert sent them
    assert np.all(np.abs(off[200:].std(axis=0) - 0.02) < 0.006)  # the configured std per axis
    step = np.abs(np.diff(off, axis=0))  # smooth: per-step changes ~0.02 * sqrt(2 * 0.05 / 0.5), not ~0.02
    assert np.median(step) < 0.01 and np.abs(np.corrcoef(off[:-1, 0], off[1:, 0])[0, 1] - np.exp(-0.1)) < 0.05
    np.testing.assert_array_equal(drive(0.02, 1)[1], sent)  # the seed reproduces the demo
    assert np.abs(drive(0.02, 2)[1] - sent).max() > 0.01
    with pytest.raises(ValueError, match="dart_noise_m"):
        ExpertController(Straight(), dart_noise_m=-0.01)

    # Clean grasp: while the expert is at its grasp the offset only fades, by the correlation's factor per step,
    # and it is pushed again afterwards. Without the option (`off` above) it is pushed there too.
    assert np.abs(off[999:1399] - np.exp(-0.1) * off[998:1398]).max() > 1e-3
    arm, ctl = Arm(), ExpertController(Straight(), dart_noise_m=0.02, dart_clean_grasp=True)
    ctl.reset(world, arm, np.random.default_rng(1))
    labels = np.stack([ctl.act(obs) for _ in range(2000)])
    off = np.stack(arm.sent)[:, :3] - labels[:, :3]
    np.testing.assert_allclose(off[999:1399], np.exp(-0.1) * off[998:1398], atol=1e-12)  # calls 999-1398
    assert np.abs(off[1398]).max() < 1e-9 and off[1600:].std(axis=0).min() > 0.01


def test_pick_place_expert_is_at_its_grasp_from_above_the_cube_until_its_fingers_close():
    """What DART's clean grasp keeps noise-free: the descent from above the chosen cube and the grip, not the
    approach before it nor the lift after. An arm that follows the expert's carrot exactly, with the sim
    gripper's speed, shows where that is; nothing carries the cube up here, so the fingers lose it on the lift
    and the expert descends again, at its grasp again."""
    cubes = np.array([[0.5, 0.12, CUBE_HALF], [0.55, -0.1, CUBE_HALF]])
    info = {"cubes": cubes, "pad": np.array([0.45, 0.0, PickPlace.PAD_TOP]), "tcp": np.array([0.35, 0.0, 0.3])}
    expert = make_expert("pick_place", mode=1)
    expert.reset(make_task("pick_place"), info, np.random.default_rng(0))
    p = np.r_[info["tcp"], 1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.08]
    step, flags, states = ExecutorConfig.gripper_speed * STEP_DT, [], []
    for _ in range(150):
        a = expert.act(p, info)
        flags.append(expert.at_grasp())
        p = p.copy()
        p[:3] = a[:3]
        goal = 0.08 if a[9] > ExecutorConfig.gripper_close_below else expert.held_width(p, info)
        p[9] += np.clip(goal - p[9], -step, step)
        states.append(p)
    flags, states = np.array(flags), np.array(states)
    edges = np.diff(flags.astype(int))
    starts, ends = np.flatnonzero(edges == 1) + 1, np.flatnonzero(edges == -1)
    assert len(starts) >= 2 and len(ends) >= 2 and starts[0] < ends[0] < starts[1] < ends[1]
    for on, off in zip(starts[:2], ends[:2]):
        first, last, lifted = states[on], states[off], states[off + 10]
        np.testing.assert_allclose(first[:2], cubes[1, :2], atol=1e-6)  # above the chosen cube, high
        assert first[2] > 0.1 and last[2] < 2 * CUBE_HALF  # ...down to it
        assert abs(last[9] - 2 * CUBE_HALF) < 1e-3  # fingers closed on the cube
        assert lifted[2] > last[2] + 0.01 and not flags[off + 1:off + 11].any()  # lifting: noise allowed again
    assert not flags[:starts[0]].any() and states[starts[0] - 1, 2] > 0.12  # never on the approach


def test_randomisation_is_seeded_and_modes_are_balanced():
    for name in TASKS:
        task = make_task(name)
        a, b = task.sample(np.random.default_rng(3)), task.sample(np.random.default_rng(3))
        assert a == b and a != task.sample(np.random.default_rng(4))
    modes = [make_expert("track").reset(make_task("track"), {"tcp": np.zeros(3)}, mode_rng(s)) for s in range(200)]
    assert 70 < sum(modes) < 130  # both strategies, about half each
    with pytest.raises(ValueError, match="unknown sim task"):
        make_task("stack")


def test_balanced_demos_take_the_modes_in_turn(tmp_path):
    """Seeds 0 and 1 both draw track's right puck; with balance_modes the two demos take one puck each."""
    from flow2one.data.episodes import list_episodes, read_meta
    from flow2one.sim.demos import generate

    task = make_task("track")
    assert [make_expert("track").reset(task, {"tcp": np.zeros(3)}, mode_rng(s)) for s in (0, 1)] == [1, 1]
    report = generate("track", tmp_path, 2, seed=0, progress=False, balance_modes=True)
    assert report["mode_histogram"] == {"left_puck": 1, "right_puck": 1} and report["balance_modes"]
    assert [read_meta(p).mode for p in list_episodes(tmp_path)] == [0, 1]


def test_pop_up_camping_where_a_puck_pops_does_not_count():
    """The pucks pop a few cm from where they usually do, one on each side; a gripper waiting low where a
    puck then pops must still come down onto it after the pop (waiting there is a guess, not a reaction)."""
    task = make_task("pop_up")
    places = np.array([task.sample(np.random.default_rng(s))["pucks"] for s in range(300)])  # (300, 2, 2)
    assert (np.abs(places[:, :, 0] - 0.5) <= 0.04).all()
    assert (places[:, 0, 1] > 0.1).all() and (places[:, 1, 1] < -0.1).all()  # "left" (+y) puck first
    assert np.ptp(places[:, 0], axis=0).min() > 0.05  # not one fixed spot

    task.params = task.sample(np.random.default_rng(1))
    t_pop, puck = task.params["t_pop"], np.array([*task.params["pucks"][0], PopUp.UP_Z])
    assert task.event_time(task.params) == t_pop and make_task("track").event_time({}) is None

    def judge(heights: list[float]) -> TaskStatus:
        """The TCP over the first puck at these heights, every 10 ms from just before the pop."""
        st, task._on_since, task._came_down = TaskStatus("pop_up"), None, False
        for i, z in enumerate(heights):
            t = t_pop - 0.05 + 0.01 * i
            up = task.up(t)
            info = {"pucks": np.stack([puck, puck + [0.3, 0, 0]]) if up else np.zeros((2, 3)), "up": np.array(up)}
            task._judge(st, None, None, t, np.array([puck[0], puck[1], z]), 0.08, info)
        return st

    assert not judge([0.05] * 60).success  # sat low on the spot through the pop
    came_down = judge([0.05] * 10 + [0.12] * 5 + [0.05] * 45)
    assert came_down.success and came_down.mode == 0
    assert judge([0.05] * 200).failed  # still there when the pucks sink


def test_pop_up_reaction_is_a_command_toward_a_risen_puck():
    """A command heads for a puck when its target is REACT_M nearer one (x-y) than the TCP, and only while
    the pucks are up: a wandering or sideways target, or a dive toward where a puck will rise, is not one."""
    task = make_task("pop_up")
    pucks = np.array([[0.5, 0.15, 0.01], [0.5, -0.15, 0.01]])
    info = {"up": np.array(True), "pucks": pucks, "tcp": np.array([0.45, 0.0, 0.2])}
    way = (pucks[0] - info["tcp"]) * [1, 1, 0] / np.linalg.norm((pucks[0] - info["tcp"])[:2])
    toward = info["tcp"] + 1.05 * PopUp.REACT_M * way
    assert task.heads_for_goal(info, toward)
    assert task.heads_for_goal(info, np.array([0.45, -0.03, 0.15]))  # the other puck
    assert not task.heads_for_goal(info, info["tcp"] + 0.9 * PopUp.REACT_M * way)  # too little
    assert not task.heads_for_goal(info, np.array([0.40, 0.0, 0.1]))  # away from both
    assert not task.heads_for_goal({**info, "up": np.array(False)}, toward)
    assert not make_task("track").heads_for_goal(info, toward)


def test_pop_up_pucks_are_seen_only_while_they_are_up():
    """Nothing in the scene tells where the pucks will pop: no cloud points there before the pop, their
    top faces while they are up, none again after they sank (and the episode failed: no one was on them)."""
    from flow2one.perception.calibration import load_cameras
    from flow2one.perception.cloud import CloudPipeline

    with SimWorld(WorldConfig(task="pop_up")) as world, sim_robot(world) as arm:
        home(arm)
        params = world.reset(6)
        t0 = world.sim_time
        cams = SimCameras(world.model, world.config.cameras)
        pipe = CloudPipeline(load_cameras(SIM_CALIBRATION)[:1], (0.2, -0.4, 0.005), (0.8, 0.4, 0.3), 0.005)

        def points_on_pucks() -> list[int]:
            _, depths = cams.render(world.snapshot())
            pts = pipe.process([depths[0]])
            return [int(((np.linalg.norm(pts[:, :2] - np.asarray(xy), axis=1) < 0.025)
                         & (np.abs(pts[:, 2] - 2 * PopUp.UP_Z) < 0.005)).sum()) for xy in params["pucks"]]

        try:
            before = points_on_pucks()
            world.wait_until(t0 + params["t_pop"] + 0.1)
            up = points_on_pucks()
            world.wait_until(t0 + params["t_pop"] + PopUp.UP_S + 0.1)
            after = points_on_pucks()
        finally:
            cams.close()
        assert PopUp.POP_S[0] <= params["t_pop"] <= PopUp.POP_S[1]
        assert before == [0, 0] and min(up) >= 3 and after == [0, 0], (before, up, after)
        st = world.status()
        assert st.failed and not st.success and "sank" in st.reason


def test_calibration_file_matches_scene_and_clouds_land_on_objects():
    """calibration/sim.yaml is what the live scene says, and depth deprojected with it puts points on
    the cubes' top faces, for the fixed camera and for the wrist camera (mount ee, T_base_ee from franky)."""
    from flow2one.perception.calibration import load_cameras

    with SimWorld(WorldConfig(task="pick_place")) as world, sim_robot(world) as arm:
        home(arm)
        params = world.reset(5)
        live = world.cameras()
        filed = load_cameras(SIM_CALIBRATION)
        assert [c.name for c in filed] == [c.name for c in live] == ["front", "wrist"]
        assert [c.mount for c in filed] == ["base", "ee"]
        for f, c in zip(filed, live):
            assert f.intrinsics == c.intrinsics
            np.testing.assert_allclose(f.T_base_camera, c.T_base_camera, atol=1e-6)
        cams = SimCameras(world.model, world.config.cameras)
        try:
            rgbs, depths = cams.render(world.snapshot())
        finally:
            cams.close()
        assert rgbs[0].shape == (120, 160, 3) and rgbs[0].dtype == np.uint8 and depths[0].dtype == np.float32
        T_base_ee = arm.read_state().ee
        from flow2one.perception.cloud import CloudPipeline

        # front: both cube tops (z = 4 cm); wrist (at home it looks down at x <~ 0.5): the pad top (z = 1 cm)
        targets = {"front": [(c, 2 * CUBE_HALF, 0.012) for c in params["cubes"]],
                   "wrist": [(params["pad"], PickPlace.PAD_TOP, 0.03)]}
        for i, cam in enumerate(filed):
            pipe = CloudPipeline([cam], (0.2, -0.4, 0.005), (0.8, 0.4, 0.3), 0.005)
            pts = pipe.process([depths[i]], T_base_ee=T_base_ee)
            for centre, z, radius in targets[cam.name]:
                top = (np.linalg.norm(pts[:, :2] - np.asarray(centre[:2]), axis=1) < radius) & \
                      (np.abs(pts[:, 2] - z) < 0.004)
                assert top.sum() >= 3, f"camera {cam.name}: no points on the top face at {centre}"
        with pytest.raises(ValueError, match="finite"):
            send_target(arm, np.full(ACTION_DIM, np.nan), 0.0)


def test_sim_cameras_draw_their_first_frame_before_franky_sim_serves():
    """The first render of a process holds the GIL in stretches of up to 0.25 s (SimCameras.warm_up): the sim
    world node draws it before franky-sim serves, where it cannot stall a running motion past libfranka's
    1 s UDP timeout; frames reach the sink only after start(), and a camera that cannot draw fails the start
    with its reason instead of a world serving blind."""
    from types import SimpleNamespace

    from flow2one.sim.cameras import RenderLoop
    from flow2one.sim.scene import CameraSpec

    frames, serving_when_drawn = [], []
    world = SimWorld(WorldConfig(task="reach_around"))
    loop = RenderLoop(world, 10.0, lambda snap, rgbs, depths: frames.append((snap.time, depths[0])))

    def before_serving() -> None:
        loop.prepare()
        serving_when_drawn.append(world.running)

    world.start(before_serving=before_serving)  # (not `with`: its __enter__ would start it a second time)
    try:
        assert serving_when_drawn == [False] and world.running and frames == []
        with pytest.raises(RuntimeError, match="started already"):
            world.start()
        loop.start()
        try:
            assert wait_for(lambda: len(frames) >= 3, 30), f"{len(frames)} frames in 30 s"
        finally:
            loop.stop()
        assert frames[-1][0] > frames[0][0] and all((depth > 0).any() for _, depth in frames)
        blind = SimpleNamespace(model=world.model, config=SimpleNamespace(
            cameras=(CameraSpec("no_such_camera", (1.0, 0.0, 0.5), (0.5, 0.0, 0.0)),)))
        with pytest.raises(RuntimeError, match="no_such_camera"):
            RenderLoop(blind, 10.0, lambda *a: None).prepare()
    finally:
        world.close()


def test_a_wall_clock_world_keeps_the_wall_clocks_pace():
    """The sim graph's world (wall_clock) steps to deadlines: its sim time advances `realtime` seconds per wall
    second, as the executor and policy nodes' time does. franky-sim's own pacing (1 ms minus the step, slept
    after each step) lost the sleeps' overshoot: 0.78 in the sim graph. Idle, this machine steps the world
    several times faster than real time, so a shortfall here is the pacing's, not the machine's."""
    for rate in (1.0, 0.5):
        with SimWorld(WorldConfig(task="reach_around", realtime=rate, wall_clock=True)) as world:
            time.sleep(0.3)
            t0, s0 = time.perf_counter(), world.sim_time
            time.sleep(2.0)
            pace = (world.sim_time - s0) / (time.perf_counter() - t0)
        assert 0.93 * rate <= pace <= 1.03 * rate, f"realtime {rate}: sim ran at {pace:.3f} x wall clock"


def test_demo_recording_and_policy_rollout(tmp_path):
    """A recorded expert episode becomes a valid dataset episode; a chunk policy runs closed loop."""
    from flow2one.data.episodes import list_episodes, read_episode, read_meta, write_episode
    from flow2one.graph import load_params
    from flow2one.perception.crop import CloudCrop
    from flow2one.sim.demos import to_episode

    with SimWorld(WorldConfig(task="track")) as world, sim_robot(world) as arm:
        cams = SimCameras(world.model, world.config.cameras)
        try:
            cameras = world.cameras()
            pipeline = make_cloud_pipeline(cameras)
            cloud = pipeline.process
            rec = Recording()
            res = run_episode(world, arm, ExpertController(make_expert("track")), 21, cams=cams, record=rec,
                              record_rgb=True)
            assert res.success
            ep = to_episode(rec, res, pipeline, [c.name for c in cameras], with_images=True)
            write_episode(tmp_path, 0, ep)
            back = read_episode(list_episodes(tmp_path)[0])
            T = len(back)
            assert T == res.steps and back.points.shape == (T, N_POINTS, 3) and back.rgb.shape[:2] == (T, 2)
            assert back.meta.source == "sim-expert" and back.meta.mode == res.mode and back.meta.success
            # the crop the clouds were made with: the sim graph's pointcloud section, read back from the file
            box = load_params("sim")["pointcloud"]
            assert back.meta.crop().same(CloudCrop.from_params(box)) and read_meta(list_episodes(tmp_path)[0]) == back.meta
            np.testing.assert_allclose(np.diff(back.t), 0.05, atol=1e-9)
            # commanded targets are tracked: the last action is where the TCP ended up (within 2 cm)
            assert np.linalg.norm(back.action[-1, :3] - back.proprio[-1, :3]) < 0.02
            assert np.all(back.points[:, :, 2] > -0.02)

            # a policy runs the deployed path: PolicyStep -> Executor (safety filter included) -> FrankyRobot
            from flow2one.policy.checkpoint import save_policy
            from flow2one.policy.config import preset
            from flow2one.policy.factory import build_policy
            from flow2one.sim.evaluate import open_policy_step

            save_policy(tmp_path / "plain", build_policy(preset("tiny", kind="student")))
            card = load_card(tmp_path / "plain")

            def run(backend, rate_hz=None, n_exec=8, max_age=0.25, seed=22, max_time=1.5, candidates=1, view=None):
                cfg = ExecutorConfig(**{**SIM_EXECUTOR.__dict__, "n_exec": n_exec})
                ctrl = PolicyController(PolicyStep(card, backend, candidates), cfg, rate_hz, max_age)
                try:
                    return ctrl, run_episode(world, arm, ctrl, seed, cams=cams, cloud=cloud, max_time=max_time,
                                             view=view)
                finally:
                    ctrl.close()

            sink = SinkBackend(card, dz=-0.05)
            acts: list = []
            ctrl, r = run(sink, candidates=2, view=lambda obs, c, action: acts.append(action))
            assert not r.success
            # act returns what the executor sent this step (what a task's reaction is judged on), else None
            sent = [a for a in acts if a is not None]
            assert len(sent) == ctrl.executor.counters["commands"] and len(sent) < len(acts)
            np.testing.assert_array_equal(sent[-1], ctrl.executor.filter.last.action())
            assert sink.seen[0] == {"points": (1, N_POINTS, 3), "proprio": (1, 10), "noise": (1, 2, HORIZON, 10)}
            assert len(sink.seen) >= 3 and ctrl.executor.counters["commands"] >= 20
            assert arm.read_state().position[2] < 0.487 - 0.1  # from home, each chunk executed: the arm kept descending

            ctrl, r = run(SinkBackend(card, dz=-0.05), rate_hz=4.0, n_exec=16)  # the policy node's rate cap: 4 Hz
            starts = len(ctrl.inference_s)
            assert 4 <= starts <= r.duration * 4 + 1 < r.steps, (starts, r.duration, r.steps)
            with pytest.raises(ValueError, match="rate_hz"):
                PolicyController(PolicyStep(card, sink), SIM_EXECUTOR, rate_hz=0.0)

            ctrl, r = run(SinkBackend(card, dz=-0.05, delay=0.3), n_exec=32, max_age=1.0)  # 0.3 s a chunk
            assert r.steps >= 28, r.steps  # the control loop never waited for a chunk
            # a chunk reaches the robot 0.3 s of SIM time after its observation whatever franky-sim's RTF
            assert 2 <= len(ctrl.inference_s) <= r.duration / 0.3 + 1, (r.duration, len(ctrl.inference_s))
            assert arm.read_state().position[2] < 0.487 - 0.08  # more than one 5 cm chunk executed
            ctrl, r = run(SinkBackend(card, dz=-0.05, delay=0.3), n_exec=32, max_age=0.25)
            assert ctrl.stale >= 2 and ctrl.executor.counters["chunks_accepted"] == 0  # the node's staleness rule

            # the safety filter is in the loop: a chunk through the table is clamped to the workspace floor
            ctrl, r = run(SinkBackend(card, dz=-1.0), max_time=2.0)
            assert ctrl.executor.counters["commands_clamped"] > 0
            assert arm.read_state().position[2] > SIM_EXECUTOR.workspace_min[2] - 0.01

            # the graph's camera lag: each inference gets the cloud of the control step before its robot state,
            # and with state_at_cloud the state of that cloud's instant, the chunk starting there
            for at_cloud in (False, True):
                clouds, poses, seen = {}, {}, []
                step = PolicyStep(card, SinkBackend(card, dz=-0.05), state_at_cloud=at_cloud)
                infer = step.infer
                step.infer = lambda o, infer=infer: seen.append(o) or infer(o)
                ctrl = PolicyController(step, SIM_EXECUTOR, camera_lag_steps=1)

                def log(obs, c, action):
                    clouds[obs.stamp_ns], poses[obs.stamp_ns] = obs.points(), obs.T_base_ee[:3, 3].copy()

                run_episode(world, arm, ctrl, 24, cams=cams, cloud=cloud, max_time=1.5, view=log)
                ctrl.close()
                assert len(seen) >= 4 and seen[0].stamp_ns == seen[0].origin_ns  # no older cloud yet at the start
                step_ns, moved = round(STEP_DT * 1e9), 0
                for o in seen[1:]:
                    cloud_ns = min(clouds, key=lambda t: abs(t - o.stamp_ns))
                    after_ns = min(clouds, key=lambda t: abs(t - cloud_ns - step_ns))  # the next step's stamp
                    assert o.stamp_ns == cloud_ns and np.array_equal(o.inputs["points"][0], clouds[cloud_ns])
                    state_ns = cloud_ns if at_cloud else after_ns
                    assert o.origin_ns == state_ns and abs(after_ns - cloud_ns - step_ns) <= 1
                    np.testing.assert_allclose(o.inputs["proprio"][0, :3], poses[state_ns], atol=1e-6)
                    moved += np.linalg.norm(poses[after_ns] - poses[cloud_ns]) > 1e-4
                assert moved >= 2  # the arm moved between the cloud and the newest state: the pairing is tested

            # a checkpoint directory (what `flow2one sim-eval --policy DIR` loads) runs in the same loop
            save_policy(tmp_path / "ckpt", build_policy(preset("tiny", kind="student", history_steps=2)))
            step = open_policy_step(tmp_path / "ckpt", "torch")
            seen: list[dict] = []
            model = step.backend
            step.backend = lambda feeds: seen.append(feeds) or model(feeds)
            ctrl = PolicyController(step, SIM_EXECUTOR)
            r = run_episode(world, arm, ctrl, 23, cams=cams, cloud=cloud, max_time=1.0)
            ctrl.close()
            assert r.steps >= 10 and len(ctrl.inference_s) >= 2
            # the history model gets the cloud 2 steps back: the first cloud until there is one that old
            assert np.array_equal(seen[0]["points_prev"], seen[0]["points"])
            assert all(o["points_prev"].shape == (1, 4096, 3) for o in seen)
        finally:
            cams.close()


RIG_RESTART_SCRIPT = """
import json
from flow2one.sim.experts import make_expert
from flow2one.sim.rig import ABANDONED, SimRig, exit_fast_if_abandoned
from flow2one.sim.rollout import ExpertController, run_episode_safe

class StopsTheSim(ExpertController):
    # the expert, but the franky-sim under it is stopped once, 0.5 s into the episode: a real lost link
    def __init__(self, rig):
        super().__init__(make_expert("reach_around"))
        self.rig, self.stopped = rig, False
    def act(self, obs):
        if not self.stopped and obs.t >= 0.5:
            self.stopped = True
            self.rig.world.close()
        return super().act(obs)

rig = SimRig("reach_around", cloud=False)
first_world, frames = rig.world, []
r = run_episode_safe(rig, StopsTheSim(rig), 11, frame_every=10, frames=frames)
second_world = rig.world
out = {"success": r.success, "steps": r.steps, "restarts": rig.restarts, "abandoned": len(ABANDONED),
       "frames": len(frames), "new_world": second_world is not first_world and second_world.running}
rig.troubled = True  # as set after planner errors: the next episode gets a fresh, cleanly made world
r = run_episode_safe(rig, ExpertController(make_expert("reach_around")), 12)
out.update(renewed=rig.renewals == 1 and rig.world is not second_world and not second_world.running,
           second_success=r.success, abandoned_after=len(ABANDONED))
print(json.dumps(out))
rig.close()
exit_fast_if_abandoned(0)
"""


def test_lost_link_gets_a_new_world_and_the_episode_again():
    """run_episode_safe (sim-eval, sim-demos, table1): the franky-sim stopped mid-episode -> a new world,
    the episode run again from the start, the broken client abandoned and the process still exits. After
    planner errors the next episode starts on a new world, the old one closed cleanly (not abandoned)."""
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", RIG_RESTART_SCRIPT], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "robot link lost" in proc.stderr and "attempt 1/3" in proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["success"] and out["restarts"] == 1 and out["abandoned"] == 1 and out["new_world"]
    # what frames hold is the successful run's only: one per 10 steps from its start
    assert out["frames"] == (out["steps"] + 9) // 10
    assert out["renewed"] and out["second_success"] and out["abandoned_after"] == 1
