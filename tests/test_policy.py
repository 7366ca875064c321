"""Policy core: shapes, Chamfer loss, time-dependent masking, the time-free student, checkpoints."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from flow2one.data.normalize import PointNormalizer, RangeNormalizer, StandardNormalizer
from flow2one.policy.cfm import euler_x_prediction, logit_normal_t, time_dependent_mask
from flow2one.policy.chamfer import chamfer_distance, chamfer_terms, pairwise_sq_dist
from flow2one.policy.checkpoint import load_policy, save_policy
from flow2one.policy.config import POLICY_KINDS, from_dict, preset, to_dict
from flow2one.policy.encoder import hand_points
from flow2one.policy.factory import build_policy
from flow2one.policy.unet1d import SinusoidalTimeEmbedding

torch.set_num_threads(1)
H, A = 32, 10


def _obs(cfg, b: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    e = cfg.encoder
    obs = {"points": torch.rand(b, 4096, 3, generator=g), "proprio": torch.rand(b, e.proprio_in, generator=g)}
    if e.history_steps:
        obs["points_prev"] = obs["points"] + 0.01 * torch.rand(b, 4096, 3, generator=g)
    if e.use_rgb:
        obs["rgb"] = torch.randint(0, 256, (b, e.n_views, *e.image_size, 3), generator=g, dtype=torch.uint8)
    if e.use_depth:
        obs["depth"] = torch.rand(b, e.n_views, *e.image_size, generator=g) * 2
    return obs


def _fitted(kind: str, **enc) -> torch.nn.Module:
    cfg = preset("tiny", kind, **enc)
    cfg.flow.sample_steps = 3
    p = build_policy(cfg)
    obs = _obs(cfg, 8, seed=1)
    p.fit_normalizers(obs, torch.randn(8, H, A) * 0.2 + 0.5)
    return p.eval()


@pytest.mark.parametrize("kind", POLICY_KINDS)
def test_sample_and_export_shapes(kind: str) -> None:
    p = _fitted(kind)
    obs = _obs(p.cfg, 3)
    assert p.sample(obs, n_samples=5).shape == (3, 5, H, A)
    assert p.sample({k: v.numpy() for k, v in obs.items()}, 2).shape == (3, 2, H, A)  # numpy works too
    assert p.export_input_names == ["points", "proprio", "noise"]
    assert p.export_forward(obs["points"], obs["proprio"], torch.randn(3, H, A)).shape == (3, H, A)


def test_all_modalities_encoder_shapes_and_gate() -> None:
    p = _fitted("student", use_rgb=True, use_depth=True, n_views=2)
    obs = _obs(p.cfg, 2)
    assert p.export_input_names == ["points", "proprio", "rgb", "depth", "noise"]
    assert p.sample(obs, 3).shape == (2, 3, H, A)
    enc = p.encoder
    assert hasattr(enc, "cross") and hasattr(enc, "gate") and type(enc.rgb_tokens.backbone).__name__ == "ResNet18"
    # The gated fusion depends on both image modalities.
    base = p.export_forward(*(obs[k] for k in ("points", "proprio", "rgb", "depth")), torch.zeros(2, H, A))
    obs2 = dict(obs, depth=obs["depth"] + 0.5)
    moved = p.export_forward(*(obs2[k] for k in ("points", "proprio", "rgb", "depth")), torch.zeros(2, H, A))
    assert not torch.allclose(base, moved)


def test_points_at_or_below_the_floor_do_not_reach_the_encoding() -> None:
    """points_floor_z leaves the table out of the PointNet's pool: moving points below it changes nothing,
    moving points above it does, and without a floor the same move is seen."""
    floored, plain = _fitted("student", history_steps=2, points_floor_z=0.3), _fitted("student", history_steps=2)
    obs = _obs(floored.cfg, 2)
    table = {k: v.clone() for k, v in obs.items()}
    for k in ("points", "points_prev"):
        below = obs[k][..., 2] <= 0.3
        table[k][below] = torch.rand(int(below.sum()), 3) * torch.tensor([1.0, 1.0, 0.3])
    low = obs["points"][..., 2] <= 0.3
    above = {k: v.clone() for k, v in obs.items()}
    above["points"][~low] += 0.05
    with torch.no_grad():
        assert torch.equal(floored.encoder(obs), floored.encoder(table))
        assert not torch.allclose(floored.encoder(obs), floored.encoder(above))
        assert not torch.allclose(plain.encoder(obs), plain.encoder(table))
        empty = {k: v * torch.tensor([1.0, 1.0, 0.0]) if k.startswith("points") else v for k, v in obs.items()}
        assert torch.isfinite(floored.encoder(empty)).all()
    with pytest.raises(ValueError, match="points_floor_z"):
        preset("tiny", "student", points_floor_z=float("nan"))


def test_the_self_filter_leaves_the_hand_and_the_arm_above_the_ceiling_out() -> None:
    """With points_hand_radius and points_ceiling_z the encoding does not see the hand (near the TCP in x-y,
    from the fingertips up) or anything at or above the ceiling, in either cloud, and still sees the scene;
    under training displacement the mask stays on the real hand, so the displaced pose cannot be read off
    the cloud. The weights are the unmasked model's (a teacher initialises such a student)."""
    masked = _fitted("student", history_steps=2, points_hand_radius=0.1, points_ceiling_z=0.3)
    plain = build_policy(preset("tiny", "student", history_steps=2))
    plain.load_state_dict(masked.state_dict())
    plain.eval()
    assert masked.cfg.encoder.same_weights(plain.cfg.encoder)
    proprio = torch.tensor([[0.5, 0.0, 0.1] + [0.3] * 7] * 2)
    scene = torch.tensor([[0.5, 0.0, 0.07], [0.8, 0.3, 0.15], [0.2, -0.3, 0.05]])  # under the fingers, far, far
    cloud = torch.cat([scene.repeat(20, 1), torch.tensor([[0.52, 0.0, 0.15]])]).expand(2, -1, -1).clone()
    obs = {"points": cloud, "points_prev": cloud + 0.001, "proprio": proprio}
    moved = {k: v.clone() for k, v in obs.items()}
    for k in ("points", "points_prev"):
        moved[k][:, -1] = torch.tensor([0.55, 0.04, 0.12])  # the hand elsewhere, still within the radius
        moved[k][:, :2] = torch.tensor([[0.6, 0.2, 0.35], [0.1, 0.1, 0.5]])  # arm points above the ceiling
    scene_moved = {k: v.clone() for k, v in obs.items()}
    scene_moved["points"][:, 2] += 0.02
    with torch.no_grad():
        assert torch.equal(masked.encoder(obs), masked.encoder(moved))
        assert not torch.allclose(masked.encoder(obs), masked.encoder(scene_moved))
        assert not torch.allclose(plain.encoder(obs), plain.encoder(moved))
        masked.encoder.train()
        masked.cfg.encoder.pose_noise = 0.3  # beyond the radius: a mask that followed it would show the hand
        torch.manual_seed(0)
        a = masked.encoder(obs)
        torch.manual_seed(0)
        assert torch.equal(a, masked.encoder(moved))  # same displacement draws: the mask never moved with it
    for bad in ({"points_hand_radius": -0.1}, {"points_hand_radius": 0.1, "use_proprio": False}):
        with pytest.raises(ValueError, match="points_hand_radius"):
            preset("tiny", "student", **bad)
    with pytest.raises(ValueError, match="points_ceiling_z"):
        preset("tiny", "student", points_ceiling_z=float("inf"))


def test_a_hand_mask_from_above_the_grasp_keeps_what_the_fingers_hold() -> None:
    """points_hand_from moves the hand mask's lower edge: from 3 cm above the TCP, a held cube's top (2 cm
    above it) is seen and the hand body (5 cm above) is not; the default edge, just below the fingertips,
    hides both."""
    keep = _fitted("student", points_hand_radius=0.1, points_hand_from=0.03)
    hide = build_policy(preset("tiny", "student", points_hand_radius=0.1))
    hide.load_state_dict(keep.state_dict())
    hide.eval()
    proprio = torch.tensor([[0.5, 0.0, 0.1] + [0.3] * 7])
    cloud = torch.tensor([[0.8, 0.3, 0.05]] * 20 + [[0.51, 0.0, 0.12], [0.52, 0.01, 0.15]])[None]
    obs = {"points": cloud, "proprio": proprio}

    def moved(row: int) -> dict[str, torch.Tensor]:
        out = {k: v.clone() for k, v in obs.items()}
        out["points"][0, row] += torch.tensor([0.02, 0.02, 0.005])  # still in the same band above the TCP
        return out

    with torch.no_grad():
        assert not torch.allclose(keep.encoder(obs), keep.encoder(moved(-2)))  # the held cube
        assert torch.equal(keep.encoder(obs), keep.encoder(moved(-1)))  # the hand body
        assert torch.equal(hide.encoder(obs), hide.encoder(moved(-2)))
    with pytest.raises(ValueError, match="points_hand_from"):
        preset("tiny", "student", points_hand_radius=0.1, points_hand_from=float("nan"))


def test_scene_shift_translates_a_training_sample_as_one_rigid_scene() -> None:
    """scene_shift moves each sample's cloud, previous cloud, EE position and labels by one x-y offset within
    the half-range (samples differ), leaves heights, rotation and gripper alone, and never acts in eval mode."""
    p = _fitted("student", history_steps=2, scene_shift=0.05).train()
    b = 64
    batch = {**_obs(p.cfg, b), "teacher_set": torch.rand(b, 3, H, A)}
    out = p.scene_shifted(batch)
    offset = out["proprio"][:, :2] - batch["proprio"][:, :2]
    assert offset.abs().max() <= 0.05 + 1e-6 and offset.std(0).min() > 0.01
    for k in ("points", "points_prev", "teacher_set"):
        d = out[k] - batch[k]
        assert torch.allclose(d[..., :2], offset.view(b, *[1] * (d.ndim - 2), 2).expand_as(d[..., :2]), atol=1e-6)
        assert torch.equal(d[..., 2:], torch.zeros_like(d[..., 2:]))
    assert torch.equal(out["proprio"][:, 2:], batch["proprio"][:, 2:])
    assert p.eval().scene_shifted(batch) is batch
    with pytest.raises(ValueError, match="scene_shift"):
        preset("tiny", "student", scene_shift=-0.01)


def test_object_shift_moves_the_objects_and_labels_while_the_arm_stays() -> None:
    """object_shift moves each sample's cloud points and labels by one x-y offset within the half-range, but not
    the EE position input, nor the hand's points (within the hand mask of the TCP), nor any height; a sample
    with a label that ends inside the hand mask (its target hidden from the pool) is left as it is."""
    p = _fitted("student", history_steps=2, object_shift=0.05, points_hand_radius=0.1).train()
    b = 64
    batch = {**_obs(p.cfg, b), "teacher_set": torch.rand(b, 3, H, A)}
    tcp = batch["proprio"][:, :3].clone()
    batch["teacher_set"][..., -1, :3] = tcp[:, None] + torch.tensor([0.3, 0.0, -0.1])  # ends away from the hand
    batch["teacher_set"][:16, 1, -1, :3] = tcp[:16] + torch.tensor([0.05, 0.0, 0.0])  # one ends at the hand
    for k in ("points", "points_prev"):  # the hand, about the TCP
        batch[k][:, :200] = tcp[:, None] + torch.tensor([0.03, -0.02, 0.02])
    out = p.scene_shifted(batch)
    assert torch.equal(out["proprio"], batch["proprio"])
    offset = out["teacher_set"][:, 0, 0, :2] - batch["teacher_set"][:, 0, 0, :2]
    assert torch.equal(offset[:16], torch.zeros_like(offset[:16]))
    assert offset.abs().max() <= 0.05 + 1e-6 and offset[16:].std(0).min() > 0.01
    d = out["teacher_set"] - batch["teacher_set"]
    assert torch.allclose(d[..., :2], offset.view(b, 1, 1, 2).expand_as(d[..., :2]), atol=1e-6)
    assert torch.equal(d[..., 2:], torch.zeros_like(d[..., 2:]))
    for k in ("points", "points_prev"):
        hand = hand_points(batch[k], tcp, 0.1, p.cfg.encoder.points_hand_from)
        d = out[k] - batch[k]
        assert torch.equal(d[..., 2], torch.zeros_like(d[..., 2]))
        assert torch.equal(d[hand], torch.zeros_like(d[hand]))
        assert torch.allclose(d[..., :2][~hand], offset[:, None].expand(b, d.shape[1], 2)[~hand], atol=1e-6)
    assert hand[:, :200].all() and (~hand).sum() > b * 1000
    assert p.eval().scene_shifted(batch) is batch
    with pytest.raises(ValueError, match="object_shift"):
        preset("tiny", "student", object_shift=float("inf"))


@pytest.mark.parametrize("kind", POLICY_KINDS)
def test_every_kind_trains_on_shifted_scenes(kind: str) -> None:
    """The training step shifts every kind's labels: moved 50 m, far outside the normalisers' range, they cost
    over ten times as much as the same batch unshifted."""
    from flow2one.train.loop import _LossModule

    target = "teacher_set" if kind == "student" else "action"
    labels = torch.randn(4, *((2,) if kind == "student" else ()), H, A) * 0.2 + 0.5
    costs = []
    for shift in (0.0, 50.0):
        p = _fitted(kind, scene_shift=shift).train()
        torch.manual_seed(0)
        costs.append(float(_LossModule(p)({**_obs(p.cfg, 4, seed=3), target: labels})[0]))
    assert costs[1] > 10 * costs[0]


def test_motion_noise_is_for_training_only() -> None:
    """The noise on the motion input blurs it while training and never reaches an evaluated (or exported)
    model: in eval mode the encoding is the noise-free one, call after call."""
    noisy = _fitted("student", motion_steps=4, motion_noise=0.5)
    clean = build_policy(preset("tiny", "student", motion_steps=4))
    clean.load_state_dict(noisy.state_dict())
    obs = _obs(noisy.cfg, 4, seed=2)
    noisy.encoder.train()
    assert not torch.equal(noisy.encoder(obs), noisy.encoder(obs))
    noisy.encoder.eval()
    clean.encoder.eval()
    assert torch.equal(noisy.encoder(obs), noisy.encoder(obs)) and torch.equal(noisy.encoder(obs), clean.encoder(obs))
    with pytest.raises(ValueError, match="motion_noise"):
        preset("tiny", "student", motion_noise=0.5)  # noise on a motion input the model does not have


def test_pose_noise_is_for_training_only() -> None:
    """The arm displacement changes the encoding call after call while training and never reaches an
    evaluated (or exported) model; bad settings are refused by name."""
    noisy = _fitted("student", pose_noise=0.5)
    obs = _obs(noisy.cfg, 4, seed=2)
    noisy.encoder.train()
    assert not torch.equal(noisy.encoder(obs), noisy.encoder(obs))
    noisy.encoder.eval()
    clean = build_policy(preset("tiny", "student"))
    clean.load_state_dict(noisy.state_dict())
    assert torch.equal(noisy.encoder(obs), clean.encoder.eval()(obs))
    for bad in ({"pose_noise": -0.1}, {"pose_noise": float("inf")}, {"pose_noise": 0.1, "use_proprio": False},
                {"pose_noise_radius": -1.0}):
        with pytest.raises(ValueError, match="pose_noise"):
            preset("tiny", "student", **bad)


@pytest.mark.parametrize("radius", [0.0, 0.1])
def test_pose_noise_moves_the_hand_in_the_cloud_with_the_pose(radius: float) -> None:
    """Only the EE position moves (rotation and gripper exact); with a radius, the hand's points (near the TCP
    in x-y, from the fingertips up) move with it in both clouds, and the puck under the fingers and the rest of
    the scene stay put."""
    enc = _fitted("student", history_steps=2, pose_noise=0.05, pose_noise_radius=radius).encoder.train()
    proprio = torch.tensor([[0.5, 0.0, 0.1] + [0.3] * 7] * 2)
    hand = torch.tensor([[0.52, 0.0, 0.15], [0.5, 0.03, 0.09]])  # a hand point and a fingertip
    scene = torch.tensor([[0.5, 0.0, 0.02], [0.8, 0.3, 0.15], [0.0, 0.0, 0.0]])  # puck below, far, table
    cloud = torch.cat([hand, scene]).expand(2, -1, -1)
    obs = {"points": cloud, "points_prev": cloud + 0.001, "proprio": proprio}
    moved = enc._move_arm(obs)
    shift = moved["proprio"][:, :3] - proprio[:, :3]
    assert (shift.abs() > 0).all() and torch.equal(moved["proprio"][:, 3:], proprio[:, 3:])
    for k in ("points", "points_prev"):
        want = obs[k].clone()
        if radius:
            want[:, :2] += shift[:, None]
        assert torch.allclose(moved[k], want, atol=1e-6)


def test_bad_observation_raises_clear_errors() -> None:
    p = _fitted("student")
    with pytest.raises(ValueError, match="lacks 'proprio'"):
        p.sample({"points": torch.zeros(1, 4096, 3)})
    with pytest.raises(ValueError, match="'proprio' has shape"):
        p.sample({"points": torch.zeros(1, 4096, 3), "proprio": torch.zeros(1, 7)})
    with pytest.raises(ValueError, match="batch"):
        p.sample({"points": torch.zeros(2, 4096, 3), "proprio": torch.zeros(1, 10)})
    with pytest.raises(ValueError, match="n_samples"):
        p.sample(_obs(p.cfg, 1), 0)


def test_student_never_receives_time() -> None:
    student, teacher = _fitted("student"), _fitted("teacher")
    assert student.net.time_mlp is None
    assert not any(isinstance(m, SinusoidalTimeEmbedding) for m in student.modules())
    assert any(isinstance(m, SinusoidalTimeEmbedding) for m in teacher.modules())
    # Every FiLM projection of the student reads the observation embedding only (no time features).
    films = [m for n, m in student.net.named_modules() if n.endswith("film")]
    assert films and all(f[1].in_features == student.cfg.encoder.embed_dim for f in films)
    assert all(f[1].in_features > teacher.cfg.encoder.embed_dim
               for n, f in teacher.net.named_modules() if n.endswith("film"))
    with pytest.raises(TypeError, match="takes no time"):
        student.net(torch.zeros(1, H, A), torch.zeros(1, student.cfg.encoder.embed_dim), torch.zeros(1))
    assert "t" not in inspect.signature(student.export_forward).parameters
    # One pass: same (observation, noise) -> same chunk, and sample() equals export_forward on that noise.
    obs = _obs(student.cfg, 2)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    s = student.sample(obs, 1, generator=g1)[:, 0]
    noise = torch.randn(2, H, A, generator=g2)
    assert torch.equal(s, student.export_forward(obs["points"], obs["proprio"], noise))


def test_student_initialised_from_the_teacher_is_its_one_step_prediction() -> None:
    teacher = _fitted("teacher", history_steps=2)
    with torch.no_grad():  # non-zero time MLP and FiLM weights everywhere, so the folding is exercised
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    student = build_policy(from_dict({**to_dict(teacher.cfg), "kind": "student"})).eval()
    student.init_from_teacher(teacher)
    obs = _obs(student.cfg, 3)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    torch.testing.assert_close(student.sample(obs, 4, generator=g1), teacher.sample(obs, 4, generator=g2, steps=1),
                               atol=1e-5, rtol=1e-5)
    other = build_policy(from_dict({**to_dict(preset("tiny", "teacher")), "kind": "student"}))
    with pytest.raises(ValueError, match="config differs"):
        other.init_from_teacher(teacher)


def test_chamfer_on_hand_made_sets_both_directions() -> None:
    def traj(v: float) -> torch.Tensor:
        return torch.full((H, 2), v)
    target = torch.stack([traj(0.0), traj(10.0)])[None]  # teacher: two modes, 0 and 10
    collapsed = torch.stack([traj(0.0), traj(0.0)])[None]  # student covers one mode only
    cover, seek = chamfer_terms(target, collapsed)
    assert cover.item() == pytest.approx(50.0)  # mode 10 is 100 away from its nearest hypothesis, mean of (0, 100)
    assert seek.item() == pytest.approx(0.0)  # every hypothesis sits on a mode
    averaged = torch.stack([traj(5.0), traj(5.0), traj(0.0)])[None]  # two samples between the modes
    cover, seek = chamfer_terms(target, averaged)
    assert cover.item() == pytest.approx((0 + 25) / 2)
    assert seek.item() == pytest.approx((25 + 25 + 0) / 3)
    assert chamfer_distance(target, averaged).item() == pytest.approx(12.5 + 50 / 3)
    assert chamfer_distance(target, torch.stack([traj(10.0), traj(0.0), traj(0.0)])[None]).item() == 0.0
    w = torch.tensor([1.0, 0.0])  # weights per action dim: a difference only in dim 1 costs nothing
    shifted = target.clone()
    shifted[..., 1] += 3.0
    assert chamfer_distance(target, shifted, w).item() == 0.0
    with pytest.raises(ValueError, match="trajectory sets"):
        chamfer_terms(target, torch.zeros(1, 2, H, 3))


def test_pairwise_distance_and_its_gradient_match_the_broadcast_difference() -> None:
    """The matrix-product form against the definition, mean over (H, D) of w * (a - b)^2, at the student
    stage's sizes and scale (normalised actions), values and gradients."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, 16, H, 10, generator=g) * 2 - 1
    b = (a[:, :8].repeat(1, 4, 1, 1) + 0.05 * torch.randn(4, 32, H, 10, generator=g)).requires_grad_(True)
    w = torch.rand(10, generator=g) + 0.5
    fast = pairwise_sq_dist(a, b, w)
    (fast.min(dim=1).values.sum() + fast.min(dim=2).values.sum()).backward()
    grad, b.grad = b.grad.clone(), None
    slow = ((a.unsqueeze(2) - b.unsqueeze(1)) ** 2 * w).mean(dim=(-1, -2))
    (slow.min(dim=1).values.sum() + slow.min(dim=2).values.sum()).backward()
    torch.testing.assert_close(fast, slow, atol=2e-6, rtol=1e-4)
    torch.testing.assert_close(grad, b.grad, atol=1e-6, rtol=1e-4)
    assert pairwise_sq_dist(a, a).diagonal(dim1=1, dim2=2).abs().max() < 1e-6


def test_time_dependent_masking() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, H, A) + 5.0
    same, keep = time_dependent_mask(x, torch.zeros(4000), 0.8, generator=g)
    assert torch.equal(same, x) and keep.all()  # t = 0: never masked
    masked, keep = time_dependent_mask(x, torch.ones(4000), 0.5, generator=g)
    assert keep.shape == (4000, H, 1)
    assert abs(1 - keep.mean().item() - 0.5) < 0.02  # t = 1: mask_max share of the steps
    zero_steps = (masked == 0).all(-1)
    assert torch.equal(zero_steps, keep[..., 0] == 0)  # whole time steps (all action dims) are zeroed
    assert torch.equal(masked[keep[..., 0] == 1], x[keep[..., 0] == 1])  # the rest is untouched
    half, keep = time_dependent_mask(x, torch.full((4000,), 0.5), 0.5, generator=g)
    assert abs(1 - keep.mean().item() - 0.25) < 0.02  # probability grows linearly with t
    assert torch.equal(time_dependent_mask(x, torch.ones(4000), 0.0)[0], x)
    with pytest.raises(ValueError):
        time_dependent_mask(x, torch.ones(4000), 1.5)
    t = logit_normal_t(20000, -0.5, 1.0, generator=g)
    assert 0 < t.min() and t.max() < 1 and abs(t.median().item() - torch.sigmoid(torch.tensor(-0.5)).item()) < 0.02


def test_teacher_loss_uses_masking_and_one_step_is_direct_prediction() -> None:
    p = _fitted("teacher")
    p.cfg.flow.mask_max_prob = 1.0
    batch = {**_obs(p.cfg, 64), "action": torch.randn(64, H, A)}
    _, logs = p.loss(batch)
    assert 0.2 < logs["masked_frac"] < 0.8  # ~ E[t] of the logit-normal
    obs = _obs(p.cfg, 2)
    noise = torch.randn(2, H, A)
    p.export_steps = 1
    emb = p.encoder(p.prepare_obs(obs))
    direct = p.action_norm.unnormalize(p.net(noise, emb, torch.zeros(2)))
    assert torch.allclose(p.export_forward(obs["points"], obs["proprio"], noise), direct, atol=1e-6)
    # Euler on x-prediction lands exactly on the last prediction at t=1.
    target = torch.ones(3, H, A)
    assert torch.allclose(euler_x_prediction(lambda x, t: target, torch.randn(3, H, A), 7), target, atol=1e-6)


def test_normalizers() -> None:
    data = torch.tensor([[0.0, 2.0, 5.0], [4.0, 2.0, 7.0]])
    n = RangeNormalizer(3).fit(data)
    z = n.normalize(data)
    assert torch.allclose(z[:, 0], torch.tensor([-1.0, 1.0])) and torch.allclose(z[:, 1], torch.zeros(2))
    assert torch.allclose(n.unnormalize(z), data)
    # an EE orientation held within 0.0002 in the demos: a 0.01 wobble at run time stays a small input
    held = torch.tensor([[1.0, 0.0], [1.0002, 0.0002]])
    r = RangeNormalizer(2).fit(held)
    assert torch.all(r.half_range == 0.05)
    assert r.normalize(torch.tensor([[1.0101, 0.0101]])).abs().max() < 0.25
    s = StandardNormalizer(3).fit(data)
    assert torch.allclose(s.unnormalize(s.normalize(data)), data, atol=1e-6)
    pts = PointNormalizer().fit(torch.tensor([[0.0, 0.0, 0.0], [2.0, 1.0, 0.5]]))
    assert torch.all(pts.half_range == 1.0)  # isotropic: one scale for x, y, z
    with pytest.raises(ValueError, match="NaN"):
        RangeNormalizer(3).fit(torch.tensor([[0.0, float("nan"), 1.0]]))


@pytest.mark.parametrize("kind", POLICY_KINDS)
def test_checkpoint_round_trip_is_bit_exact(kind: str, tmp_path) -> None:
    p = _fitted(kind)
    with torch.no_grad():  # non-default weights everywhere
        for prm in p.parameters():
            prm.add_(0.01 * torch.randn_like(prm))
    save_policy(tmp_path / "ck", p, {"trained_on": "unit test"})
    assert {f.name for f in (tmp_path / "ck").iterdir()} >= {"model.safetensors", "config.yaml", "card.yaml"}
    q, cfg = load_policy(tmp_path / "ck")
    assert type(q) is type(p) and to_dict(cfg) == to_dict(p.cfg)
    obs = _obs(p.cfg, 2, seed=3)
    noise = torch.randn(2, H, A)
    with torch.no_grad():
        assert torch.equal(p.export_forward(obs["points"], obs["proprio"], noise),
                           q.export_forward(obs["points"], obs["proprio"], noise))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(p.sample(obs, 4, generator=g1), q.sample(obs, 4, generator=g2))
    from flow2one.runtime.card import load_card
    card = load_card(tmp_path / "ck")
    assert card.kind == kind and card.input_names() == ("points", "proprio", "noise")


def test_load_rejects_bad_checkpoints(tmp_path) -> None:
    with pytest.raises(ValueError, match="config.yaml"):
        load_policy(tmp_path)
    p = _fitted("student")
    save_policy(tmp_path / "ck", p)
    (tmp_path / "ck" / "config.yaml").write_text((tmp_path / "ck" / "config.yaml").read_text()
                                                 .replace("embed_dim: 32", "embed_dim: 48"))
    with pytest.raises(ValueError, match="do not match"):
        load_policy(tmp_path / "ck")


def test_config_validation_and_round_trip() -> None:
    cfg = preset("paper", "student", points_floor_z=0.01)
    assert from_dict(to_dict(cfg)) == cfg and cfg.encoder.use_rgb and cfg.encoder.use_depth
    with pytest.raises(ValueError, match="unknown"):
        from_dict({**to_dict(cfg), "colour": 1})
    with pytest.raises(ValueError, match="kind"):
        from_dict({**to_dict(cfg), "kind": "diffusion"})
    with pytest.raises(ValueError, match="horizon"):
        from_dict({**to_dict(cfg), "horizon": 30})


@pytest.mark.parametrize("masks", [{}, {"points_floor_z": 0.3},
                                   {"points_floor_z": 0.3, "points_hand_radius": 0.2, "points_ceiling_z": 0.8,
                                    "points_hand_from": 0.03}])
def test_student_export_runs_in_onnxruntime(tmp_path, masks: dict) -> None:
    """export_forward is traceable at opset 17 and the ONNX graph matches torch (the runtime's contract),
    also with the encoder's floor mask and self-filter."""
    ort = pytest.importorskip("onnxruntime")
    p = _fitted("student", **masks)
    obs = _obs(p.cfg, 2)
    noise = torch.randn(2, H, A)

    class Form(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, points, proprio, noise):
            return self.m.export_forward(points, proprio, noise)

    path = tmp_path / "s.onnx"
    torch.onnx.export(Form(p), (obs["points"], obs["proprio"], noise), str(path), opset_version=17,
                      input_names=p.export_input_names, output_names=["actions"], dynamo=False,
                      dynamic_axes={k: {0: "b"} for k in p.export_input_names})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"points": obs["points"].numpy(), "proprio": obs["proprio"].numpy(),
                          "noise": noise.numpy()})[0]
    with torch.no_grad():
        want = p.export_forward(obs["points"], obs["proprio"], noise).numpy()
    assert np.abs(got - want).max() < 1e-4
