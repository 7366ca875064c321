"""The arithmetic of Table I: success over seed groups, pooling cells evaluated on disjoint seed groups, and the
significance of a difference in success between two cells."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from flow2one.sim.rollout import EpisodeResult, reaction_median
from flow2one.sim.table1.results import Cell

Z_ONE_SIDED_5PCT = 1.64


def cell_from_episodes(results: list[EpisodeResult], groups: list[int]) -> Cell:
    """Success mean/std over seed groups (episodes in group order, equal numbers per group), mode histograms,
    failure reasons, time to success."""
    per_group = np.array_split(np.array([r.success for r in results], dtype=float), len(groups))
    rates = [float(g.mean()) for g in per_group if len(g)]
    ok = [r for r in results if r.success]
    tts = [r.time_to_success for r in ok if r.time_to_success is not None]
    reacted, reaction = reaction_median(results)
    return Cell(
        success_mean=float(np.mean(rates)), success_std=float(np.std(rates)), success_per_seed=rates,
        episodes=len(results), successes=len(ok),
        mode_histogram=dict(Counter(r.mode_name or "none" for r in results)),
        mode_histogram_success=dict(Counter(r.mode_name or "none" for r in ok)),
        failures=dict(Counter(r.reason for r in results if not r.success)),
        time_to_success_s=float(np.mean(tts)) if tts else None,
        sim_rtf_mean=float(np.mean([r.rtf for r in results])),
        planner_errors=int(sum(r.planner_errors for r in results)),
        seed_groups=list(groups), per_episode=list(results), reacted=reacted, reaction_s_median=reaction)


def pool(a: Cell, b: Cell, groups: list[int]) -> Cell:
    """One cell from two evaluated on disjoint seed groups: success statistics over all their groups; the
    in-loop inference figures weighted by episodes (their medians are not re-computable)."""
    cell = cell_from_episodes(a.per_episode + b.per_episode, groups)
    w = np.array([a.episodes, b.episodes], dtype=float)
    for key in ("inference_ms_in_loop_median", "replans_per_sim_s"):
        va, vb = getattr(a, key), getattr(b, key)
        setattr(cell, key, None if va is None or vb is None else float(np.dot(w, [va, vb]) / w.sum()))
    cell.chunks_rejected = a.chunks_rejected + b.chunks_rejected
    for key in ("chunks_stale", "chunks_kept_plan"):
        va, vb = getattr(a, key), getattr(b, key)
        setattr(cell, key, None if va is None or vb is None else va + vb)
    return cell


def z_higher(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-proportion z statistic of success rate k1/n1 over k2/n2, episodes pooled (Z_ONE_SIDED_5PCT: the first
    is higher with one-sided p = 0.05): a handful of episodes between two rows is noise at these sample sizes."""
    p = (k1 + k2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    return (k1 / n1 - k2 / n2) / se if se > 0 else 0.0
