"""Benchmark: 2 cameras 640x480 depth -> fused, cropped, voxelised 4,096-point cloud (goal <= 10 ms median, one core).

Baseline measured in the same run: the naive path (numpy deprojection of every pixel -> Open3D AABB
crop -> voxel_down_sample -> farthest_point_down_sample to 4,096). Quality: the fraction of the
full-resolution occupied voxels that the strided fast path still covers, and the symmetric mean
nearest-neighbour distance between the fast and the naive clouds.
"""

from __future__ import annotations

import os
import time

import numpy as np

from flow2one.bench.timing import time_calls
from flow2one.graph import load_params
from flow2one.perception.cloud import CloudPipeline, pixel_rays
from flow2one.perception.synthetic import render_depth, table_scene, two_camera_rig

WORKSPACE = ((0.2, -0.4, -0.02), (0.9, 0.4, 0.4))
VOXEL = 0.01


def _median_ms(fn, repeats: int) -> tuple[float, float, float]:
    """(wall median, wall p90, CPU-time median) in ms; CPU time is what one core spends on a shared machine
    (of the process: Open3D may use threads of its own)."""
    t = time_calls(fn, repeats, warmup=0, cpu_clock=time.process_time)
    return t.ms_median, t.ms(90), t.cpu_ms_median


def naive_open3d(cams, depths, n_points: int = 4096):
    import open3d as o3d

    pts = []
    for cam, d in zip(cams, depths):
        p = pixel_rays(cam.intrinsics) * d.reshape(-1, 1)
        p = p[d.reshape(-1) > 0] @ cam.T_base_camera[:3, :3].T + cam.T_base_camera[:3, 3]
        pts.append(p)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.concatenate(pts)))
    pcd = pcd.crop(o3d.geometry.AxisAlignedBoundingBox(np.array(WORKSPACE[0]), np.array(WORKSPACE[1])))
    pcd = pcd.voxel_down_sample(VOXEL)
    if len(pcd.points) > n_points:
        pcd = pcd.farthest_point_down_sample(n_points)
    return np.asarray(pcd.points)


def _mean_nn_mm(a: np.ndarray, b: np.ndarray) -> float:
    import open3d as o3d

    pa = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(a.astype(np.float64)))
    pb = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(b.astype(np.float64)))
    ab, ba = np.mean(pa.compute_point_cloud_distance(pb)), np.mean(pb.compute_point_cloud_distance(pa))
    return float((ab + ba) / 2 * 1e3)


def run(quick: bool = False) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # Open3D's OpenMP, if it is imported here first
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    cams = two_camera_rig()
    depths = [render_depth(c, table_scene(0)) for c in cams]
    repeats = 20 if quick else 200
    fast = CloudPipeline(cams, *WORKSPACE, VOXEL)
    full = CloudPipeline(cams, *WORKSPACE, VOXEL, pixel_stride=1)
    out = fast.process(depths)
    assert out.shape == (4096, 3)
    fast_ms, fast_p90, fast_cpu = _median_ms(lambda: fast.process(depths), repeats)
    full_ms, _, full_cpu = _median_ms(lambda: full.process(depths), max(5, repeats // 4))
    fast.process(depths)
    full.process(depths)
    vox_fast, vox_full = fast.stats.n_voxels, full.stats.n_voxels
    # The graphs' own box and grid (twice WORKSPACE's cells): the cell table against sorting the keys
    box = load_params("deploy")["pointcloud"]
    deploy = CloudPipeline(cams, box["workspace_min"], box["workspace_max"], box["voxel_size"])
    by_sort = CloudPipeline(cams, box["workspace_min"], box["workspace_max"], box["voxel_size"])
    by_sort.DENSE_CELLS = 0
    np.testing.assert_array_equal(deploy.process(depths), by_sort.process(depths))
    deploy_ms, _, _ = _median_ms(lambda: deploy.process(depths), repeats)
    sort_ms, _, _ = _median_ms(lambda: by_sort.process(depths), repeats)
    naive = naive_open3d(cams, depths)
    naive_ms, _, naive_cpu = _median_ms(lambda: naive_open3d(cams, depths), 2 if quick else 7)
    return {
        "cameras": len(cams), "resolution": "640x480", "voxel_m": VOXEL, "n_points": 4096,
        "pixel_stride_auto": [fast.auto_stride(c) for c in cams],
        "fast_median_ms": round(fast_ms, 3), "fast_p90_ms": round(fast_p90, 3),
        "fast_median_cpu_ms": round(fast_cpu, 3),
        "full_resolution_median_ms": round(full_ms, 3), "full_resolution_median_cpu_ms": round(full_cpu, 3),
        "naive_open3d_median_ms": round(naive_ms, 2), "naive_open3d_median_cpu_ms": round(naive_cpu, 2),
        "speedup_vs_naive": round(naive_ms / fast_ms, 1), "speedup_vs_naive_cpu": round(naive_cpu / fast_cpu, 1),
        "goal_ms": 10.0, "meets_goal_cpu": fast_cpu <= 10.0, "meets_goal_wall": fast_ms <= 10.0,
        "voxel_coverage_vs_full_resolution": round(vox_fast / vox_full, 4),
        "deploy_box_cells": deploy.n_cells, "deploy_box_median_ms": round(deploy_ms, 3),
        "deploy_box_sorted_keys_median_ms": round(sort_ms, 3), "deploy_box_speedup_vs_sorted": round(sort_ms / deploy_ms, 2),
        "mean_nn_distance_fast_vs_naive_mm": round(_mean_nn_mm(out, naive), 2),
        "naive_points": int(len(naive)),
        "threads": "numpy elementwise (single-threaded); OMP_NUM_THREADS=1 for Open3D when set before import",
    }
