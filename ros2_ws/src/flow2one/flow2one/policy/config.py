"""Policy configuration: one typed, validated dataclass tree that builds every policy kind.

The same tree is written to `config.yaml` next to each checkpoint, so a checkpoint rebuilds exactly the
module it was trained with. Presets span a small CPU model (points + proprio, narrow U-Net) to the paper
size (dual ResNet-18 RGB/depth, cross-attention, gated fusion, PointNet, proprio MLP, wide U-Net).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from typing import Any, ClassVar

from flow2one.spec import ACTION_DIM, ACTION_LOSS_WEIGHTS, HORIZON, PROPRIO_DIM

FINGERTIP_MARGIN = 0.015  # m below the TCP still counted as hand: closed fingertips reach about 1 cm past it

POLICY_KINDS = ("teacher", "student", "l1flow", "regression")
ENCODER_KINDS = ("observation", "vector")


@dataclass
class EncoderConfig:
    """`observation`: robot observations (points/proprio/rgb/depth); `vector`: a generic condition vector."""

    kind: str = "observation"
    embed_dim: int = 128  # width of the final observation embedding that conditions the U-Net
    use_points: bool = True
    use_proprio: bool = True
    use_rgb: bool = False
    use_depth: bool = False
    n_views: int = 1  # camera views for rgb/depth
    image_size: tuple[int, int] = (96, 96)  # (h, w) the images arrive in
    resnet_width: int = 64  # 64 = ResNet-18; smaller for CPU models
    visual_dim: int = 256  # shared latent of RGB/depth tokens
    attn_heads: int = 4
    pointnet_dims: tuple[int, ...] = (64, 128, 256)
    point_dim: int = 256
    proprio_dim: int = 64
    proprio_in: int = PROPRIO_DIM
    cond_dim: int = 0  # vector encoder input width
    hidden_dim: int = 256  # vector encoder MLP width
    # > 0: also encode the cloud this many control steps (spec.STEP_DT) earlier, input "points_prev". One
    # frame shows where a moving object is, not where it goes; the pair shows its velocity.
    history_steps: int = 0
    # > 0: proprio also carries its own change over this many control steps (input width 2 x PROPRIO_DIM):
    # the arm's motion. One pose does not say whether the arm is moving, so a motion-blind chunk starts as
    # if from rest, and one replaced after a step or two (re-planning many times a second) never gets going.
    motion_steps: int = 0
    # Training only: std of Gaussian noise added to the normalised motion part, so that the motion input
    # cannot stand in for the observation (a policy that sees its motion learns to continue it).
    motion_noise: float = 0.0
    # Training only: std (m) of Gaussian noise added to the EE position in proprio, labels untouched. In
    # demos the TCP sits on the expert's target, so a policy can copy its own pose instead of finding the
    # target in the cloud; in its own states it then holds whatever offset it has (results/replan, "copycat").
    pose_noise: float = 0.0
    # With pose_noise: the cloud's points within this x-y radius (m) of the TCP, from the fingertips up (the
    # hand), move with the noisy position; 0 = the proprio input alone moves.
    pose_noise_radius: float = 0.0
    # Training only: half-range (m) of a uniform random x-y translation of the whole sample: cloud, EE position
    # and labels alike (table-top physics does not change under it). 80 demos show a cube in 80 places, and a
    # small PointNet then learns where cubes usually are: the student aims its grasp there, not at the cube
    # (results/replan, eleventh stop). Shifted samples put the objects anywhere in reach, so only the cloud
    # says where the target is; measured there, it did not help (a guess: the arm moves with the scene, and the
    # pose input explains the shift as well; object_shift below keeps the arm, and was level held out too).
    # Every sim task's target is in the cloud (the pick_place pad too); a target fixed in the base frame would
    # be blurred by this.
    scene_shift: float = 0.0
    # Training only: half-range (m) of a uniform random x-y translation of the objects alone: the cloud's points
    # and the labels move, the arm stays (the EE position input, and the hand's points when points_hand_radius
    # is set). scene_shift moves the arm too, so its pose explains the shift as well as the cloud does; here
    # only the cloud can say where the target went. With a hand mask, a sample whose label ends inside it is
    # not shifted: its target is out of the pool, so nothing would show the shift (results/replan,
    # twenty-second stop: shifted anyway, the student stalled short of the reach_around ball).
    object_shift: float = 0.0
    # Base-frame height (m) at or below which cloud points are left out of the PointNet's max-pool: the
    # table top (+ a margin). The table is ~94% of a sim cloud, and with it in the pool a small PointNet
    # could not place the 2 cm reach_around ball (results/README.md). None = every point counts.
    points_floor_z: float | None = None
    # A self-filter from the EE pose alone: the cloud's points within this x-y radius (m) of the TCP, from the
    # fingertips up (the hand and what it holds), and those at or above points_ceiling_z (the arm above the
    # objects) are left out of the max-pool as well. A cloud that shows the arm lets the policy copy its own
    # pose (results/replan, "copycat"); pose_noise then cannot hide it. 0 / None = kept.
    points_hand_radius: float = 0.0
    points_ceiling_z: float | None = None
    # Height (m) relative to the TCP from which the hand mask counts points. Just below the fingertips by
    # default; above the grasp (e.g. 0.03: a held 4 cm cube's top is 2.5 cm above the TCP) it keeps what the
    # fingers close on, and the fingertips, in view while the hand body above them stays out.
    points_hand_from: float = -FINGERTIP_MARGIN
    # Settings that shape the training data, not the module's weights: a warm start or a teacher
    # initialisation may change them.
    TRAINING_ONLY: ClassVar[tuple[str, ...]] = ("motion_noise", "pose_noise", "pose_noise_radius", "scene_shift",
                                                "object_shift")
    # Which points the PointNet pools: the same weights fit either way, so these may change there too.
    POOL_MASKS: ClassVar[tuple[str, ...]] = ("points_floor_z", "points_hand_radius", "points_ceiling_z",
                                             "points_hand_from")

    def same_weights(self, other: EncoderConfig) -> bool:
        """Whether both build modules with the same weights (training-only settings and pool masks aside)."""
        unset = {f.name: f.default for f in fields(self)}
        clean = {k: unset[k] for k in self.TRAINING_ONLY + self.POOL_MASKS}
        return replace(self, **clean) == replace(other, **clean)

    def __post_init__(self) -> None:
        self.image_size = tuple(self.image_size)
        self.pointnet_dims = tuple(self.pointnet_dims)
        if self.kind not in ENCODER_KINDS:
            raise ValueError(f"encoder kind {self.kind!r} not in {ENCODER_KINDS}")
        if self.kind == "vector" and self.cond_dim <= 0:
            raise ValueError("vector encoder needs cond_dim > 0")
        if self.kind == "observation" and not (self.use_points or self.use_proprio or self.use_rgb
                                               or self.use_depth):
            raise ValueError("observation encoder needs at least one modality enabled")
        if self.visual_dim % self.attn_heads:
            raise ValueError(f"visual_dim {self.visual_dim} must divide by attn_heads {self.attn_heads}")
        if self.history_steps < 0 or (self.history_steps and not self.use_points):
            raise ValueError(f"history_steps {self.history_steps} must be >= 0, and > 0 only with use_points")
        if self.motion_noise < 0 or (self.motion_noise and not self.motion_steps):
            raise ValueError(f"motion_noise {self.motion_noise} must be >= 0, and > 0 only with motion_steps")
        if not (self.pose_noise >= 0 and math.isfinite(self.pose_noise)) or (self.pose_noise and not self.use_proprio):
            raise ValueError(f"pose_noise {self.pose_noise} must be finite and >= 0, and > 0 only with use_proprio")
        if not (self.pose_noise_radius >= 0 and math.isfinite(self.pose_noise_radius)):
            raise ValueError(f"pose_noise_radius {self.pose_noise_radius} must be finite and >= 0")
        if not (self.scene_shift >= 0 and math.isfinite(self.scene_shift)) or (
                self.scene_shift and not (self.use_points or self.use_proprio)):
            raise ValueError(f"scene_shift {self.scene_shift} must be finite and >= 0, and > 0 only with points or "
                             "proprio (what it translates)")
        if not (self.object_shift >= 0 and math.isfinite(self.object_shift)) or (
                self.object_shift and not self.use_points):
            raise ValueError(f"object_shift {self.object_shift} must be finite and >= 0, and > 0 only with points")
        if self.motion_steps < 0 or (self.motion_steps and not self.use_proprio):
            raise ValueError(f"motion_steps {self.motion_steps} must be >= 0, and > 0 only with use_proprio")
        if self.kind == "observation":  # the proprio width follows from motion_steps
            self.proprio_in = PROPRIO_DIM * (2 if self.motion_steps else 1)
        for name in ("points_floor_z", "points_ceiling_z", "points_hand_from"):
            if getattr(self, name) is not None and not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite or None, got {getattr(self, name)}")
        if not (self.points_hand_radius >= 0 and math.isfinite(self.points_hand_radius)) or (
                self.points_hand_radius and not (self.use_points and self.use_proprio)):
            raise ValueError(f"points_hand_radius {self.points_hand_radius} must be finite and >= 0, and > 0 only "
                             "with use_points and use_proprio (the TCP comes from proprio)")
        if min(self.embed_dim, self.n_views, self.resnet_width) <= 0:
            raise ValueError("embed_dim, n_views and resnet_width must be positive")


@dataclass
class UNetConfig:
    down_dims: tuple[int, ...] = (128, 256, 512)
    kernel_size: int = 5
    n_groups: int = 8
    time_embed_dim: int = 128  # teacher/l1flow only; the student has no time modules at all

    def __post_init__(self) -> None:
        self.down_dims = tuple(self.down_dims)
        if not self.down_dims or any(d % self.n_groups for d in self.down_dims):
            raise ValueError(f"down_dims {self.down_dims} must be non-empty multiples of n_groups {self.n_groups}")
        if self.kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd")


@dataclass
class FlowConfig:
    """Teacher / L1 Flow training and sampling."""

    t_logit_mean: float = -0.5  # logit-normal t: negative mean puts more samples at the noisy start
    t_logit_std: float = 1.0
    mask_max_prob: float = 0.2  # time-dependent masking: P(mask a step of x_t) = mask_max_prob * t
    sample_steps: int = 50  # teacher ODE (Euler) steps
    l1_mid_time: float = 0.5  # L1 Flow: Euler step 0 -> mid, then one direct prediction


@dataclass
class StudentConfig:
    n_hypotheses: int = 16  # M student samples per observation in the Chamfer loss
    k_teacher: int = 16  # K teacher trajectories per observation in the distillation set


@dataclass
class PolicyConfig:
    kind: str = "teacher"
    horizon: int = HORIZON
    action_dim: int = ACTION_DIM
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    loss_weights: tuple[float, ...] | None = None  # per action dim; None = equal

    def __post_init__(self) -> None:
        if self.kind not in POLICY_KINDS:
            raise ValueError(f"policy kind {self.kind!r} not in {POLICY_KINDS}")
        n_down = len(self.unet.down_dims) - 1
        if self.horizon <= 0 or self.horizon % (2 ** n_down):
            raise ValueError(f"horizon {self.horizon} must be a positive multiple of {2 ** n_down} "
                             f"(the U-Net halves it {n_down} times)")
        if self.loss_weights is not None:
            self.loss_weights = tuple(float(w) for w in self.loss_weights)
            if len(self.loss_weights) != self.action_dim:
                raise ValueError(f"loss_weights has {len(self.loss_weights)} entries, action_dim is {self.action_dim}")

    def with_kind(self, kind: str) -> PolicyConfig:
        return from_dict({**to_dict(self), "kind": kind})


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict (tuples as lists) for YAML."""
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v
    return plain(asdict(cfg))


def from_dict(d: dict[str, Any]) -> PolicyConfig:
    """Inverse of to_dict; unknown keys raise so a typo in a YAML file is not silently ignored."""
    def build(cls: type, data: dict[str, Any]) -> Any:
        names = {f.name: f for f in fields(cls)}
        unknown = set(data) - set(names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
        kwargs = {}
        for k, v in data.items():
            sub = {"encoder": EncoderConfig, "unet": UNetConfig, "flow": FlowConfig, "student": StudentConfig}
            kwargs[k] = build(sub[k], v) if cls is PolicyConfig and k in sub and isinstance(v, dict) else v
        return cls(**kwargs)
    if is_dataclass(d):
        return d  # type: ignore[return-value]
    return build(PolicyConfig, dict(d))


def preset(name: str, kind: str = "teacher", **encoder_overrides: Any) -> PolicyConfig:
    """Named sizes: `tiny` (tests), `small` (CPU, points + proprio), `paper` (all modalities, ResNet-18)."""
    if name == "tiny":
        enc = EncoderConfig(embed_dim=32, pointnet_dims=(16, 32), point_dim=32, proprio_dim=16,
                            resnet_width=8, visual_dim=32, attn_heads=2, image_size=(32, 32))
        unet = UNetConfig(down_dims=(16, 32), n_groups=4, time_embed_dim=16)
    elif name == "small":
        enc = EncoderConfig(embed_dim=64, pointnet_dims=(32, 64, 128), point_dim=64, proprio_dim=32,
                            resnet_width=16, visual_dim=64, attn_heads=4, image_size=(64, 64))
        unet = UNetConfig(down_dims=(32, 64, 128), n_groups=8, time_embed_dim=32)
    elif name == "paper":
        enc = EncoderConfig(embed_dim=256, use_rgb=True, use_depth=True, resnet_width=64, visual_dim=256,
                            attn_heads=4, image_size=(128, 128), pointnet_dims=(64, 128, 256), point_dim=256,
                            proprio_dim=64)
        unet = UNetConfig(down_dims=(256, 512, 1024), n_groups=8, time_embed_dim=128)
    else:
        raise ValueError(f"unknown preset {name!r}; choose tiny, small or paper")
    enc = EncoderConfig(**{**asdict(enc), **encoder_overrides})
    weights = ACTION_LOSS_WEIGHTS if enc.kind == "observation" else None
    return PolicyConfig(kind=kind, encoder=enc, unet=unet, loss_weights=weights)
