"""Training CLIs end to end on a tiny episode dataset: teacher -> distillation set -> student, L1 Flow,
regression, offline evaluation, TensorBoard logs, resumable checkpoints; and the generic vector API."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flow2one import cli
from flow2one.data.distill_set import load_distill_set, save_distill_set
from flow2one.data.episodes import Episode, EpisodeMeta, write_episode
from flow2one.data.windows import load_windows
from flow2one.policy import api
from flow2one.policy.checkpoint import load_policy

torch.set_num_threads(1)
FAST = ["--preset", "tiny", "--batch-size", "4", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("episodes")
    rng = np.random.default_rng(0)
    for i in range(3):
        T = 12
        action = np.cumsum(rng.normal(0, 0.01, (T, 10)), 0).astype(np.float32)
        write_episode(d, i, Episode(meta=EpisodeMeta(task="t", source="unit", success=True), t=np.arange(T) * 0.05,
                                    proprio=action + 0.001, action=action,
                                    points=rng.uniform(-0.5, 0.5, (T, 4096, 3)).astype(np.float32)))
    return d


def test_windows_repeat_last_action_past_the_end(dataset) -> None:
    w = load_windows(dataset)
    assert w["action"].shape == (36, 32, 10) and w["points"].shape == (36, 4096, 3)
    assert np.array_equal(w["action"][11], np.repeat(w["action"][11][:1], 32, 0))  # last step of episode 0
    assert np.array_equal(w["action"][0][:12], w["action"][:12, 0])
    with pytest.raises(ValueError, match="no episode"):
        load_windows(dataset / "nothing")


def test_windows_before_an_unpredictable_event_end_at_it(tmp_path) -> None:
    """pop_up's pop (meta.event_t): windows from before it hold the last action before it, so no chunk
    shows a dive that its observation could not predict; windows from the pop on see the whole future."""
    T = 40
    action = np.repeat(np.arange(T, dtype=np.float32)[:, None], 10, 1)  # action t is all t
    meta = EpisodeMeta(task="pop_up", source="unit", success=True, event_t=0.5)  # step 10 (dt 0.05)
    write_episode(tmp_path, 0, Episode(meta=meta, t=np.arange(T) * 0.05, proprio=action, action=action,
                                       points=np.zeros((T, 4096, 3), np.float32)))
    a = load_windows(tmp_path)["action"][:, :, 0]  # (40 windows, 32 steps)
    assert np.array_equal(a[0], np.minimum(np.arange(32), 9))  # 0..9, then holds 9
    assert np.array_equal(a[9], np.full(32, 9))
    assert np.array_equal(a[10], np.arange(10, 42).clip(max=39))  # from the event on: the real future
    plain = Episode(meta=EpisodeMeta(task="pop_up", source="unit", success=True), t=np.arange(T) * 0.05,
                    proprio=action, action=action, points=np.zeros((T, 4096, 3), np.float32))
    write_episode(tmp_path / "plain", 0, plain)
    assert np.array_equal(load_windows(tmp_path / "plain")["action"][0, :, 0], np.arange(32))


def test_windows_cloud_history(dataset) -> None:
    """points_prev is the cloud 3 steps back, the episode's first cloud for its first 3 steps."""
    w = load_windows(dataset, modalities=("points", "points_prev"), history_steps=3)
    pts = load_windows(dataset)["points"]
    for i in range(12):  # episode 0: windows 0..11
        assert np.array_equal(w["points_prev"][i], pts[max(i - 3, 0)])
    assert np.array_equal(w["points_prev"][12], pts[12])  # episode 1 starts over, never reads episode 0
    assert np.array_equal(w["points_prev"][20], pts[17])


def test_cli_pipeline_and_resume(dataset, tmp_path, capsys) -> None:
    teacher, dset, student = tmp_path / "teacher", tmp_path / "set.safetensors", tmp_path / "student"
    assert cli.main(["train-teacher", "--data", str(dataset), "--out", str(teacher), "--steps", "4",
                     "--ckpt-every", "2", *FAST]) == 0
    assert list((teacher / "tb").glob("events.out.tfevents.*"))
    state = torch.load(teacher / "train_state.pt", weights_only=False)
    assert state["step"] == 4
    before = (teacher / "model.safetensors").read_bytes()
    # Resuming a finished run trains nothing; resuming with more steps continues from step 4.
    assert cli.main(["train-teacher", "--data", str(dataset), "--out", str(teacher), "--steps", "4", "--resume",
                     *FAST]) == 0
    assert (teacher / "model.safetensors").read_bytes() == before
    assert cli.main(["train-teacher", "--data", str(dataset), "--out", str(teacher), "--steps", "6", "--resume",
                     *FAST]) == 0
    state = torch.load(teacher / "train_state.pt", weights_only=False)
    assert state["step"] == 6 and state["optimizer"]["state"][0]["step"].item() == 6
    assert (teacher / "model.safetensors").read_bytes() != before

    assert cli.main(["distill", "--teacher", str(teacher), "--data", str(dataset), "--out", str(dset), "--k", "4",
                     "--steps", "3", "--max-obs", "10", "--threads", "1", "--no-progress"]) == 0
    obs, sets, meta = load_distill_set(dset)
    assert sets.shape == (10, 4, 32, 10) and obs["points"].shape == (10, 4096, 3) and meta["k"] == 4
    assert cli.main(["train-student", "--data", str(dset), "--out", str(student), "--steps", "3",
                     "--hypotheses", "3", "--batch-size", "2", "--threads", "1", "--no-progress"]) == 0
    pol, cfg = load_policy(student)
    assert cfg.kind == "student" and cfg.student.n_hypotheses == 3 and pol.net.time_mlp is None
    for kind in ("l1flow", "regression"):
        assert cli.main([f"train-{kind}", "--data", str(dataset), "--out", str(tmp_path / kind), "--steps", "2",
                         *FAST]) == 0
        assert load_policy(tmp_path / kind)[1].kind == kind
    capsys.readouterr()
    assert cli.main(["evaluate", "--ckpt", str(student), "--data", str(dataset), "--episodes", "2:",
                     "--n-samples", "4", "--threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "student" and report["windows"] == 3 and report["pos_err_best_of_n_m"] >= 0
    assert np.isfinite(report["pose_gain"])


def test_warm_start_continues_the_checkpoint_in_its_own_units(dataset, tmp_path, capsys) -> None:
    """A DAgger round fine-tunes: --warm-start keeps the checkpoint's normalisers (its weights only mean
    something in their units) and starts from its weights, on data whose ranges differ."""
    teacher, shifted = tmp_path / "teacher", tmp_path / "shifted"
    assert cli.main(["train-teacher", "--data", str(dataset), "--out", str(teacher), "--steps", "2", *FAST]) == 0
    rng = np.random.default_rng(1)
    action = (0.5 + np.cumsum(rng.normal(0, 0.05, (12, 10)), 0)).astype(np.float32)  # other ranges
    write_episode(shifted, 0, Episode(meta=EpisodeMeta(task="t", source="unit", success=True), t=np.arange(12) * 0.05,
                                      proprio=action, action=action,
                                      points=rng.uniform(0, 2, (12, 4096, 3)).astype(np.float32)))
    base = load_policy(teacher)[0].state_dict()
    for warm, out in ((["--warm-start", str(teacher)], "warm"), ([], "cold")):
        assert cli.main(["train-teacher", "--data", str(shifted), "--out", str(tmp_path / out), "--steps", "1",
                         "--lr", "1e-9", *warm, *FAST]) == 0
    warm, cold = (load_policy(tmp_path / o)[0].state_dict() for o in ("warm", "cold"))
    norms = [k for k in base if "norm" in k and not k.endswith("weight") and not k.endswith("bias")]
    assert norms and all(torch.equal(warm[k], base[k]) for k in norms)
    assert not all(torch.equal(cold[k], base[k]) for k in norms)  # a fresh model fits the new ranges
    assert all(torch.allclose(warm[k].float(), base[k].float(), atol=1e-6) for k in base)
    capsys.readouterr()
    assert cli.main(["train-l1flow", "--data", str(shifted), "--out", str(tmp_path / "l1"), "--steps", "1",
                     "--warm-start", str(teacher), *FAST]) == 1
    assert "is a teacher checkpoint; this command trains a l1flow" in capsys.readouterr().err


def test_pose_noise_and_self_filter_are_set_on_a_warm_start_and_checked(dataset, tmp_path, capsys) -> None:
    """--pose-noise is training-only, so it may change on a warm start: the teacher's and the student's saved
    configs carry it, the student's warm start from a noise-free student accepts the noisy teacher's set, a
    student initialised from a teacher may use noise and a self-filter of its own, and a bad value is one
    clear error."""
    t0, t1, dset = tmp_path / "t0", tmp_path / "t1", tmp_path / "set.safetensors"
    assert cli.main(["train-teacher", "--data", str(dataset), "--out", str(t0), "--steps", "1", *FAST]) == 0
    assert cli.main(["train-teacher", "--data", str(dataset), "--out", str(t1), "--steps", "1", "--warm-start",
                     str(t0), "--pose-noise", "0.03", *FAST]) == 0
    assert load_policy(t0)[1].encoder.pose_noise == 0 and load_policy(t1)[1].encoder.pose_noise == 0.03
    s0 = tmp_path / "s0"
    for teacher, out, warm in ((t1, s0, []), (t0, tmp_path / "s1", ["--warm-start", str(s0), "--pose-noise", "0.01"])):
        assert cli.main(["distill", "--teacher", str(teacher), "--data", str(dataset), "--out", str(dset), "--k", "2",
                         "--steps", "2", "--max-obs", "4", "--threads", "1", "--no-progress"]) == 0
        assert cli.main(["train-student", "--data", str(dset), "--out", str(out), "--steps", "1", "--hypotheses",
                         "2", "--batch-size", "2", "--threads", "1", "--no-progress", *warm]) == 0
    assert load_policy(s0)[1].encoder.pose_noise == 0.03  # a new student takes its teacher's
    assert load_policy(tmp_path / "s1")[1].encoder.pose_noise == 0.01
    # The recipe's --init-from with noise and a self-filter of the student's own: the teacher's noise differs
    # (0.03), the set's teacher's differs (t0: none), neither teacher masks its cloud, and still the weights fit;
    # a warm start of that student on the same set keeps its filter.
    student = ["train-student", "--data", str(dset), "--steps", "1", "--hypotheses", "2", "--batch-size", "2",
               "--threads", "1", "--no-progress"]
    assert cli.main([*student, "--out", str(tmp_path / "s2"), "--init-from", str(t1), "--pose-noise", "0.02",
                     "--pose-noise-radius", "0.1", "--hand-mask", "0.1", "--ceiling-z", "0.3",
                     "--hand-mask-from", "0.03", "--scene-shift", "0.02"]) == 0
    assert cli.main([*student, "--out", str(tmp_path / "s3"), "--warm-start", str(tmp_path / "s2")]) == 0
    for s in ("s2", "s3"):
        enc = load_policy(tmp_path / s)[1].encoder
        assert (enc.pose_noise, enc.pose_noise_radius, enc.points_hand_radius, enc.points_ceiling_z,
                enc.points_hand_from, enc.scene_shift) == (0.02, 0.1, 0.1, 0.3, 0.03, 0.02)
    capsys.readouterr()
    for bad, msg in ((["--pose-noise", "-1"], "pose_noise -1.0 must be finite and >= 0"),
                     (["--hand-mask", "-1"], "points_hand_radius -1.0 must be finite and >= 0"),
                     (["--scene-shift", "nan"], "scene_shift nan must be finite and >= 0")):
        assert cli.main(["train-teacher", "--data", str(dataset), "--out", str(tmp_path / "bad"), "--steps", "1",
                         *bad, *FAST]) == 1
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_pose_gain_tells_a_copying_policy_from_one_that_reads_the_scene() -> None:
    """pose_gain is 1 for a policy whose chunk sits on the arm's own position, 0 for one placed by the cloud,
    and 0.5 halfway, whatever the noise draws."""
    from flow2one.train.evaluate import pose_gain

    class Stand:
        def __init__(self, w: float) -> None:
            self.w = w

        def sample(self, obs, n, generator=None):
            noise = torch.randn(len(obs["proprio"]), n, 32, 10, generator=generator) * 0.01
            xyz = self.w * torch.as_tensor(obs["proprio"][:, :3]) + (1 - self.w) * torch.as_tensor(
                obs["points"].mean(1))
            return noise + torch.cat([xyz, torch.zeros(len(xyz), 7)], 1)[:, None, None]

    rng = np.random.default_rng(0)
    obs = {"points": rng.uniform(0, 1, (20, 64, 3)).astype(np.float32),
           "proprio": rng.uniform(0, 1, (20, 10)).astype(np.float32)}
    for w in (1.0, 0.0, 0.5):
        assert pose_gain(Stand(w), obs, 3, seed=1) == pytest.approx(w, abs=1e-4)


def test_distill_set_rejects_bad_input(tmp_path) -> None:
    with pytest.raises(ValueError, match="rows"):
        save_distill_set(tmp_path / "s.safetensors", {"cond": np.zeros((3, 2))}, np.zeros((4, 2, 32, 2)), {})
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="not a readable"):
        load_distill_set(tmp_path / "bad.safetensors")


def test_generic_api_fits_a_two_mode_distribution() -> None:
    """The student keeps both modes of a +/- trajectory fan that MSE regression averages away."""
    rng = np.random.default_rng(0)
    n = 512
    cond = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    sign = rng.choice([-1.0, 1.0], (n, 1, 1))
    s = np.linspace(0, 1, 16)[None, :, None]
    traj = (cond[:, None] * 0.2 + sign * s).astype(np.float32)  # (n, 16, 1)
    cfg = api.vector_config(1, 1, horizon=16, down_dims=(16, 32), embed_dim=16, hidden_dim=32)
    cfg.student.n_hypotheses = 8
    kw = {"batch_size": 32, "progress": False, "lr": 3e-3}
    teacher = api.fit_teacher(cond, traj, cfg, steps=120, **kw)
    sets = api.teacher_sets(teacher, cond[:64], k=8, steps=10, progress=False)
    student = api.fit_student(cond[:64], sets, cfg, steps=120, **{**kw, "batch_size": 8})
    regression = api.fit("regression", cond, traj, cfg, steps=60, **kw)
    test = np.zeros((4, 1), np.float32)
    end = student.sample(test, 32)[..., -1, 0]  # final value: +1 or -1 per mode
    assert (end > 0.5).float().mean() > 0.2 and (end < -0.5).float().mean() > 0.2
    assert regression.sample(test, 32)[..., -1, 0].abs().max() < 0.6  # the mean of the modes


def test_encoder_lr_scale_freezes_or_slows_only_the_encoder(dataset, tmp_path, capsys) -> None:
    """--encoder-lr-scale 0 keeps a student's encoder exactly its teacher's (the U-Net still learns); a scale
    between gives the encoder that fraction of every step's learning rate; outside [0, 1] is one clear error."""
    teacher, dset = tmp_path / "teacher", tmp_path / "set.safetensors"
    assert cli.main(["train-teacher", "--data", str(dataset), "--out", str(teacher), "--steps", "2", *FAST]) == 0
    assert cli.main(["distill", "--teacher", str(teacher), "--data", str(dataset), "--out", str(dset), "--k", "2",
                     "--steps", "2", "--max-obs", "6", "--threads", "1", "--no-progress"]) == 0
    student = ["train-student", "--data", str(dset), "--init-from", str(teacher), "--steps", "3", "--lr", "0.01",
               "--hypotheses", "2", "--batch-size", "2", "--threads", "1", "--no-progress"]
    assert cli.main([*student, "--out", str(tmp_path / "frozen"), "--encoder-lr-scale", "0"]) == 0
    assert cli.main([*student, "--out", str(tmp_path / "free")]) == 0
    t = load_policy(teacher)[0].state_dict()
    frozen, free = (load_policy(tmp_path / s)[0].state_dict() for s in ("frozen", "free"))
    enc = [k for k in t if k.startswith("encoder.")]
    net = [k for k in frozen if k.startswith("net.") and "film" not in k]
    assert enc and all(torch.equal(frozen[k], t[k]) for k in enc)
    assert not all(torch.equal(free[k], t[k]) for k in enc)
    assert net and not all(torch.equal(frozen[k], t[k]) for k in net)
    assert cli.main([*student, "--out", str(tmp_path / "slow"), "--encoder-lr-scale", "0.25"]) == 0
    groups = torch.load(tmp_path / "slow" / "train_state.pt", weights_only=False)["optimizer"]["param_groups"]
    assert len(groups) == 2 and groups[1]["lr"] == pytest.approx(0.25 * groups[0]["lr"]) and groups[0]["lr"] > 0
    capsys.readouterr()
    assert cli.main([*student, "--out", str(tmp_path / "bad"), "--encoder-lr-scale", "2"]) == 1
    err = capsys.readouterr().err
    assert "--encoder-lr-scale must be in [0, 1], got 2.0" in err and len(err.strip().splitlines()) == 1
