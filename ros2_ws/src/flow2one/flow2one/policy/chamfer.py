"""Set-level distances between trajectory sets: the student's IMLE objective and the benchmark metric."""

from __future__ import annotations

import torch


def pairwise_sq_dist(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """a (B, K, H, D), b (B, M, H, D) -> (B, K, M) mean squared (optionally per-dim weighted) distance.

    As |a|^2 + |b|^2 - 2 a.b, one batched matrix product: the broadcast difference (B, K, M, H, D), 5 M floats at
    the student stage's batch of 32 with K 16 and M 32, was the largest elementwise cost of its training step;
    without it the stage runs 3.5 instead of 3.2 steps/s on two threads.
    """
    if a.ndim != 4 or b.ndim != 4 or a.shape[0] != b.shape[0] or a.shape[2:] != b.shape[2:]:
        raise ValueError(f"trajectory sets must be (B, K, H, D) and (B, M, H, D); got {tuple(a.shape)}, {tuple(b.shape)}")
    wa = a if weights is None else a * weights
    wb = b if weights is None else b * weights
    aa = (wa * a).flatten(2).sum(-1)  # (B, K)
    bb = (wb * b).flatten(2).sum(-1)  # (B, M)
    ab = torch.bmm(wa.flatten(2), b.flatten(2).transpose(1, 2))  # (B, K, M)
    # rounding can take a distance of (nearly) equal trajectories a hair below 0
    return (aa.unsqueeze(2) + bb.unsqueeze(1) - 2.0 * ab).clamp_min(0.0) / (a.shape[2] * a.shape[3])


def chamfer_terms(target: torch.Tensor, pred: torch.Tensor,
                  weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Both directions of the Chamfer distance, each (B,).

    cover: every target trajectory to its nearest prediction (mode covering: no target mode left out).
    seek: every prediction to its nearest target trajectory (mode seeking: no sample between modes).
    """
    d = pairwise_sq_dist(target, pred, weights)
    return d.min(dim=2).values.mean(dim=1), d.min(dim=1).values.mean(dim=1)


def chamfer_distance(target: torch.Tensor, pred: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric (bi-directional) Chamfer distance (B,): cover + seek (Eq. 2 of the paper)."""
    cover, seek = chamfer_terms(target, pred, weights)
    return cover + seek
