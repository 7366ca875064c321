"""Observation encoders: the only part that differs between robot policies and the generic API.

`ObservationEncoder` is the paper's geometry-aware encoder: per-view ResNet-18 for RGB and for depth,
bi-directional cross-attention between their tokens, gated fusion, PointNet over the cloud, proprio MLP,
concatenated and projected (Eq. 7). Each modality is switchable for ablations and small CPU models.
`VectorEncoder` embeds a generic condition vector. Both own their input normalisers.
"""

from __future__ import annotations

from functools import reduce

import torch
from torch import nn

from flow2one.data.normalize import PointNormalizer, RangeNormalizer, StandardNormalizer
from flow2one.policy.attention import BiCrossAttention, GatedFusion
from flow2one.policy.config import FINGERTIP_MARGIN, EncoderConfig
from flow2one.policy.resnet import ResNet18
from flow2one.spec import PROPRIO_DIM


def hand_points(points: torch.Tensor, tcp: torch.Tensor, radius: float, above: float = -FINGERTIP_MARGIN) -> torch.Tensor:
    """(B, N) bool: the points within `radius` (x-y) of each TCP (B, 3), from `above` m over it up (by default
    from just below the fingertips)."""
    d = points - tcp[:, None]
    return (d[..., :2].norm(dim=-1) < radius) & (d[..., 2] > above)


class PointNet(nn.Module):
    """Shared per-point MLP (LayerNorm, as in PointFlowMatch) and a max-pool: order-invariant (B, N, 3) -> (B, out)."""

    def __init__(self, dims: tuple[int, ...], out_dim: int) -> None:
        super().__init__()
        layers, cin = [], 3
        for d in dims:
            layers += [nn.Linear(cin, d), nn.LayerNorm(d), nn.ReLU()]
            cin = d
        self.mlp = nn.Sequential(*layers)
        self.proj = nn.Linear(cin, out_dim)

    def forward(self, points: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """keep (B, N, 1) bool: points that take part in the max-pool. The features are ReLU outputs (>= 0),
        so zeroing a left-out point's is the same as removing it; a cloud with none kept pools to zeros."""
        f = self.mlp(points)
        if keep is not None:
            f = torch.where(keep, f, torch.zeros((), dtype=f.dtype))
        return self.proj(f.max(dim=1).values)


class ImageTokens(nn.Module):
    """Per-view ResNet-18 feature maps -> tokens (B, V*h'*w', dim) with a learned view/position embedding."""

    def __init__(self, in_channels: int, cfg: EncoderConfig) -> None:
        super().__init__()
        self.backbone = ResNet18(in_channels, cfg.resnet_width)
        self.proj = nn.Linear(self.backbone.out_channels, cfg.visual_dim)
        with torch.no_grad():
            fh, fw = self.backbone(torch.zeros(1, in_channels, *cfg.image_size)).shape[-2:]
        self.pos = nn.Parameter(torch.randn(1, cfg.n_views * fh * fw, cfg.visual_dim) * 0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, V, C, h, w) float."""
        b, v = images.shape[:2]
        f = self.backbone(images.flatten(0, 1))  # (B*V, C', h', w')
        tokens = f.flatten(2).transpose(1, 2).reshape(b, v * f.shape[-2] * f.shape[-1], f.shape[1])
        return self.proj(tokens) + self.pos


class ObservationEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        parts = 0
        if cfg.use_points:
            self.point_norm = PointNormalizer()
            self.pointnet = PointNet(cfg.pointnet_dims, cfg.point_dim)
            parts += cfg.point_dim * (2 if cfg.history_steps else 1)
        if cfg.use_proprio:
            self.proprio_norm = RangeNormalizer(cfg.proprio_in)
            self.proprio_mlp = nn.Sequential(nn.Linear(cfg.proprio_in, cfg.proprio_dim), nn.SiLU(),
                                             nn.Linear(cfg.proprio_dim, cfg.proprio_dim))
            parts += cfg.proprio_dim
        if cfg.use_rgb:
            self.rgb_tokens = ImageTokens(3, cfg)
        if cfg.use_depth:
            self.depth_norm = StandardNormalizer(1)
            self.depth_tokens = ImageTokens(1, cfg)
        if cfg.use_rgb and cfg.use_depth:
            self.cross = BiCrossAttention(cfg.visual_dim, cfg.attn_heads)
            self.gate = GatedFusion(cfg.visual_dim, 2)
        if cfg.use_rgb or cfg.use_depth:
            parts += cfg.visual_dim
        self.head = nn.Sequential(nn.Linear(parts, cfg.embed_dim), nn.SiLU(), nn.Linear(cfg.embed_dim, cfg.embed_dim))

    @property
    def input_names(self) -> list[str]:
        c = self.cfg
        return [n for n, on in (("points", c.use_points), ("points_prev", c.history_steps > 0),
                                ("proprio", c.use_proprio), ("rgb", c.use_rgb), ("depth", c.use_depth)) if on]

    def fit_normalizers(self, data: dict[str, torch.Tensor]) -> None:
        if self.cfg.use_points:
            self.point_norm.fit(data["points"])
        if self.cfg.use_proprio:
            self.proprio_norm.fit(data["proprio"])
        if self.cfg.use_depth:
            self.depth_norm.fit(data["depth"])

    def check(self, obs: dict[str, torch.Tensor]) -> None:
        """Clear errors for missing or mis-shaped inputs (static shape checks: traceable)."""
        c, b = self.cfg, None
        expect = {"points": (None, 3), "points_prev": (None, 3), "proprio": (c.proprio_in,),
                  "rgb": (c.n_views, *c.image_size, 3), "depth": (c.n_views, *c.image_size)}
        for name in self.input_names:
            if name not in obs or obs[name] is None:
                raise ValueError(f"observation lacks {name!r} (encoder uses {self.input_names})")
            shape = tuple(obs[name].shape)
            want = expect[name]
            if len(shape) != len(want) + 1 or any(w is not None and s != w for s, w in zip(shape[1:], want)):
                raise ValueError(f"observation {name!r} has shape {shape}, expected (B, {', '.join(map(str, want))})"
                                 .replace("None", "N"))
            if b is not None and shape[0] != b:
                raise ValueError(f"observation {name!r} batch {shape[0]} differs from the others' {b}")
            b = shape[0]

    def _points(self, points: torch.Tensor, tcp: torch.Tensor | None) -> torch.Tensor:
        """tcp (B, 3): the EE position the hand mask is centred on; None: no hand mask."""
        c, points = self.cfg, points.float()
        z = points[..., 2:3]
        masks = [m for m in (None if c.points_floor_z is None else z > c.points_floor_z,
                             None if c.points_ceiling_z is None else z < c.points_ceiling_z,
                             None if tcp is None else ~hand_points(points, tcp, c.points_hand_radius,
                                                                   c.points_hand_from)[..., None])
                 if m is not None]
        keep = reduce(torch.logical_and, masks) if masks else None
        return self.pointnet(self.point_norm.normalize(points), keep)

    def _move_arm(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Training only: the arm displaced by Gaussian noise, the scene and the labels kept. The EE position
        input moves, and with `pose_noise_radius` so do the cloud's points that are the hand (within the radius
        of the TCP in x-y, from just below the fingertips up), else the cloud would still show where the arm is."""
        c = self.cfg
        proprio = obs["proprio"].float()
        shift = c.pose_noise * torch.randn_like(proprio[:, :3])
        moved = dict(obs, proprio=torch.cat([proprio[:, :3] + shift, proprio[:, 3:]], dim=-1))
        if c.pose_noise_radius > 0:
            for k in ("points", "points_prev"):
                if k in obs:
                    points = obs[k].float()
                    moved[k] = points + hand_points(points, proprio[:, :3], c.pose_noise_radius)[..., None] * shift[:, None]
        return moved

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        c, feats = self.cfg, []
        # The hand mask sits where the hand is (the TCP before any training displacement), as it does on the
        # robot; points_prev is masked around the current TCP too (no older one is input).
        tcp = obs["proprio"][:, :3].float() if c.points_hand_radius > 0 else None  # > 0 only with use_points
        if self.training and c.pose_noise > 0:
            obs = self._move_arm(obs)
        if c.use_points:
            now = self._points(obs["points"], tcp)
            feats.append(now)
            if c.history_steps:  # the change of the cloud's features: motion, in the same shared PointNet
                feats.append(now - self._points(obs["points_prev"], tcp))
        if c.use_proprio:
            proprio = self.proprio_norm.normalize(obs["proprio"].float())
            if self.training and c.motion_noise > 0:
                now, motion = proprio.split(PROPRIO_DIM, dim=-1)
                proprio = torch.cat([now, motion + c.motion_noise * torch.randn_like(motion)], dim=-1)
            feats.append(self.proprio_mlp(proprio))
        vis = []
        if c.use_rgb:  # uint8 (B, V, h, w, 3) -> float, channels first
            rgb = (obs["rgb"].float() / 255.0 - 0.5) / 0.25
            vis.append(self.rgb_tokens(rgb.permute(0, 1, 4, 2, 3)))
        if c.use_depth:
            depth = self.depth_norm.normalize(obs["depth"].float().unsqueeze(-1)).squeeze(-1)
            vis.append(self.depth_tokens(depth.unsqueeze(2)))
        if len(vis) == 2:
            rgb_t, depth_t = self.cross(*vis)
            feats.append(self.gate([rgb_t.mean(1), depth_t.mean(1)]))
        elif vis:
            feats.append(vis[0].mean(1))
        return self.head(torch.cat(feats, dim=-1))


class VectorEncoder(nn.Module):
    """Generic condition vector (B, cond_dim) -> embedding: the generic API's stand-in for observations."""

    input_names = ["cond"]

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.cond_norm = StandardNormalizer(cfg.cond_dim)
        self.mlp = nn.Sequential(nn.Linear(cfg.cond_dim, cfg.hidden_dim), nn.SiLU(),
                                 nn.Linear(cfg.hidden_dim, cfg.hidden_dim), nn.SiLU(),
                                 nn.Linear(cfg.hidden_dim, cfg.embed_dim))

    def fit_normalizers(self, data: dict[str, torch.Tensor]) -> None:
        self.cond_norm.fit(data["cond"])

    def check(self, obs: dict[str, torch.Tensor]) -> None:
        if "cond" not in obs:
            raise ValueError("observation lacks 'cond' (vector encoder)")
        if obs["cond"].ndim != 2 or obs["cond"].shape[1] != self.cfg.cond_dim:
            raise ValueError(f"cond has shape {tuple(obs['cond'].shape)}, expected (B, {self.cfg.cond_dim})")

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.mlp(self.cond_norm.normalize(obs["cond"].float()))


def build_encoder(cfg: EncoderConfig) -> nn.Module:
    return VectorEncoder(cfg) if cfg.kind == "vector" else ObservationEncoder(cfg)
