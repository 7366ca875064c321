"""CloudPipeline (exact point count, crop, voxels, determinism), the synchroniser and calibration files."""

from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np
import pytest

from flow2one.perception.calibration import cameras_from_dict, cameras_to_dict, load_cameras, save_cameras, select_cameras
from flow2one.perception.camera_model import CameraIntrinsics, CameraModel
from flow2one.perception.cloud import CloudPipeline, pixel_rays
from flow2one.perception.sync import ApproxTimeSync, PoseGate, StampedBuffer
from flow2one.perception.synthetic import look_at, render_depth, table_scene, two_camera_rig
from flow2one.spec import N_POINTS

SMALL = CameraIntrinsics(8, 6, 10.0, 10.0, 3.5, 2.5)
BOX = ((0.2, -0.4, -0.02), (0.9, 0.4, 0.4))


@functools.cache
def _depths(seed: int) -> tuple[np.ndarray, ...]:
    return tuple(render_depth(c, table_scene(seed)) for c in two_camera_rig())


def rig_depths(seed: int = 0):
    return two_camera_rig(), list(_depths(seed))


def unique_rows(a: np.ndarray) -> np.ndarray:
    return np.unique(np.round(a.astype(np.float64), 5), axis=0)


# ---- exact point count ---------------------------------------------------------------------------

def test_empty_input_gives_exactly_n_points_at_the_box_centre():
    cams, depths = rig_depths()
    pipe = CloudPipeline(cams, *BOX, voxel_size=0.01)
    out = pipe.process([np.zeros_like(d) for d in depths])
    assert out.shape == (N_POINTS, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, np.tile([0.55, 0.0, 0.19], (N_POINTS, 1)), atol=1e-6)
    assert pipe.stats.n_cropped == 0 and pipe.stats.padded == N_POINTS
    nan = pipe.process([np.full_like(d, np.nan) for d in depths])  # no return reported as NaN
    assert nan.shape == (N_POINTS, 3) and np.isfinite(nan).all()


def test_tiny_input_is_padded_with_its_own_points_only():
    cams, depths = rig_depths()
    tiny = [np.zeros_like(d) for d in depths]
    rows, cols = np.array([200, 240, 260]), np.array([300, 330, 350])
    tiny[0][rows, cols] = depths[0][rows, cols]  # three real returns on the table/boxes
    pipe = CloudPipeline(cams, *BOX, voxel_size=0.01, pixel_stride=1)
    out = pipe.process(tiny)
    assert out.shape == (N_POINTS, 3)
    rays = pixel_rays(cams[0].intrinsics)[rows * 640 + cols] * depths[0][rows, cols, None]
    expected = rays @ cams[0].T_base_camera[:3, :3].T + cams[0].T_base_camera[:3, 3]
    np.testing.assert_allclose(unique_rows(out), unique_rows(expected), atol=2e-5)
    assert pipe.stats.n_voxels == 3 and pipe.stats.padded == N_POINTS - 3


def test_huge_input_keeps_distinct_voxels_inside_the_box():
    cams, depths = rig_depths()
    pipe = CloudPipeline(cams, *BOX, voxel_size=0.004, pixel_stride=1)
    out = pipe.process(depths)
    assert out.shape == (N_POINTS, 3)
    assert pipe.stats.n_voxels > 4 * N_POINTS and pipe.stats.padded == 0
    assert len(unique_rows(out)) == N_POINTS  # a subset of voxels, no repeats
    assert (out >= np.float32(BOX[0]) - 1e-6).all() and (out <= np.float32(BOX[1]) + 1e-6).all()


@pytest.mark.parametrize("n", [1, 100, 20000])
def test_other_point_counts(n):
    cams, depths = rig_depths()
    assert CloudPipeline(cams, *BOX, 0.01, n_points=n).process(depths).shape == (n, 3)


# ---- crop and deprojection against hand-computed points ------------------------------------------

def hand_points(depth: np.ndarray, intr: CameraIntrinsics, T: np.ndarray) -> np.ndarray:
    pts = []
    for v in range(intr.height):
        for u in range(intr.width):
            d = float(depth[v, u])
            if d > 0:
                p_cam = np.array([(u - intr.cx) / intr.fx * d, (v - intr.cy) / intr.fy * d, d, 1.0])
                pts.append((T @ p_cam)[:3])
    return np.array(pts)


def test_crop_matches_hand_computed_points():
    rng = np.random.default_rng(3)
    T = look_at((0.5, -0.6, 0.5), (0.5, 0.0, 0.0))
    cam = CameraModel("c", SMALL, T)
    depth = rng.uniform(0.3, 1.2, size=(6, 8)).astype(np.float32)
    depth[0, 0] = 0.0  # no return
    lo, hi = np.array([0.3, -0.4, 0.0]), np.array([0.7, 0.2, 0.3])
    pts = hand_points(depth, SMALL, T)
    inside = pts[((pts >= lo) & (pts <= hi)).all(axis=1)]
    assert 5 < len(inside) < len(pts) - 5  # the box really cuts the cloud
    out = CloudPipeline([cam], lo, hi, voxel_size=1e-4, pixel_stride=1, n_points=len(inside)).process([depth])
    np.testing.assert_allclose(unique_rows(out), unique_rows(inside), atol=1e-5)


def test_camera_inside_the_box_drops_zero_depth():
    cam = CameraModel("c", SMALL, look_at((0.5, 0.0, 0.3), (0.5, 0.0, 0.0), up=(1.0, 0.0, 0.0)))
    depth = np.zeros((6, 8), np.float32)
    depth[3, 4] = 0.2
    out = CloudPipeline([cam], (0, -1, -1), (1, 1, 1), 1e-3, n_points=5, pixel_stride=1).process([depth])
    np.testing.assert_allclose(out, np.tile(hand_points(depth, SMALL, cam.T_base_camera), (5, 1)), atol=1e-6)


def test_wrist_camera_uses_the_ee_pose():
    rng = np.random.default_rng(4)
    T_base_ee = look_at((0.4, 0.1, 0.6), (0.5, 0.0, 0.0))
    T_ee_cam = np.eye(4)
    T_ee_cam[:3, 3] = (0.05, 0.0, 0.02)
    depth = rng.uniform(0.3, 0.9, size=(6, 8)).astype(np.float32)
    lo, hi = np.array([0.0, -1.0, -1.0]), np.array([1.0, 1.0, 1.0])
    expected = hand_points(depth, SMALL, T_base_ee @ T_ee_cam)
    wrist = CloudPipeline([CameraModel("w", SMALL, T_ee_cam, mount="ee")], lo, hi, 1e-4, len(expected), pixel_stride=1)
    np.testing.assert_allclose(unique_rows(wrist.process([depth], T_base_ee)), unique_rows(expected), atol=1e-5)
    with pytest.raises(ValueError, match="T_base_ee"):
        wrist.process([depth])


def test_distorted_rays_reproject_to_their_pixels():
    intr = CameraIntrinsics(64, 48, 60.0, 61.0, 31.0, 24.0, distortion=(-0.2, 0.05, 0.001, -0.002, 0.0))
    rays = pixel_rays(intr)
    proj, _ = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), intr.K, np.asarray(intr.distortion))
    v, u = np.mgrid[0:48, 0:64]
    np.testing.assert_allclose(proj.reshape(-1, 2), np.stack([u.ravel(), v.ravel()], 1), atol=1e-3)


# ---- voxels, determinism, stride -----------------------------------------------------------------

def test_voxels_are_centroids_and_both_hash_paths_agree():
    cams, depths = rig_depths()
    pipe = CloudPipeline(cams, *BOX, voxel_size=0.01)
    dense = pipe.process(depths)  # leaves the cell table full of this cloud's entries
    pts = tuple(np.array(c, np.float32) for c in ([0.301, 0.309, 0.5], [0.001, 0.003, 0.0], [0.051, 0.059, 0.2]))
    np.testing.assert_allclose(pipe.voxelize(pts), [[0.305, 0.002, 0.055], [0.5, 0.0, 0.2]], atol=1e-6)
    np.testing.assert_array_equal(CloudPipeline(cams, *BOX, voxel_size=0.01).process(depths), dense)
    pipe.DENSE_CELLS = 0  # force the sort-based path
    np.testing.assert_array_equal(pipe.process(depths), dense)


def test_deterministic_given_seed():
    cams, depths = rig_depths()
    a = CloudPipeline(cams, *BOX, 0.01, seed=7)
    first = a.process(depths)
    a.process(rig_depths(1)[1])  # call history must not matter
    np.testing.assert_array_equal(a.process(depths), first)
    np.testing.assert_array_equal(CloudPipeline(cams, *BOX, 0.01, seed=7).process(depths), first)
    assert not np.array_equal(CloudPipeline(cams, *BOX, 0.01, seed=8).process(depths), first)


def test_auto_stride_keeps_most_voxels():
    cams, depths = rig_depths()
    auto = CloudPipeline(cams, *BOX, 0.01)
    full = CloudPipeline(cams, *BOX, 0.01, pixel_stride=1)
    assert [auto.auto_stride(c) for c in cams] == [2, 2]  # 615 px focal length, <= 0.9 m box depth
    auto.process(depths)
    full.process(depths)
    assert auto.stats.n_voxels >= 0.93 * full.stats.n_voxels


def test_set_camera_rebuilds_for_new_intrinsics():
    cams, depths = rig_depths()
    pipe = CloudPipeline(cams, *BOX, 0.01)
    half = CameraIntrinsics(320, 240, 307.5, 307.5, 159.75, 119.75)
    pipe.set_camera(0, dataclasses.replace(cams[0], intrinsics=half))
    with pytest.raises(ValueError, match="depth is"):
        pipe.process(depths)
    small = [cv2.resize(depths[0], (320, 240), interpolation=cv2.INTER_NEAREST), depths[1]]
    assert pipe.process(small).shape == (N_POINTS, 3)


def test_bad_inputs_are_named():
    cams, depths = rig_depths()
    pipe = CloudPipeline(cams, *BOX, 0.01)
    with pytest.raises(ValueError, match="2 cameras"):
        pipe.process(depths[:1])
    with pytest.raises(ValueError, match="float metres"):
        pipe.process([(d * 1000).astype(np.uint16) for d in depths])
    with pytest.raises(ValueError, match="max > min"):
        CloudPipeline(cams, (0, 0, 0), (1, -1, 1), 0.01)
    with pytest.raises(ValueError, match="voxel_size"):
        CloudPipeline(cams, *BOX, 0.0)


# ---- synchroniser ----------------------------------------------------------------------------------

def test_sync_pairs_jittered_streams_and_skips_dropped_frames():
    rng = np.random.default_rng(0)
    period, slop = 33_333_333, 10_000_000
    out: list[tuple] = []
    sync = ApproxTimeSync(3, slop, lambda *m: out.append(m), queue_size=5)
    dropped = {1: set(rng.choice(100, 15, replace=False)), 2: set(rng.choice(100, 10, replace=False))}
    events = []
    for k in range(100):
        for s in range(3):
            if k in dropped.get(s, ()):
                continue
            stamp = k * period + int(rng.uniform(-3e6, 3e6))
            events.append((stamp + int(rng.uniform(0, 20e6)), s, stamp, (k, s)))  # arrival order jitters too
    for _, s, stamp, msg in sorted(events):
        sync.add(s, stamp, (stamp, msg))
    complete = [k for k in range(100) if all(k not in d for d in dropped.values())]
    assert [m[0][1][0] for m in out] == complete  # one set per complete frame, in order
    for msgs in out:
        assert len({m[1][0] for m in msgs}) == 1  # all of the same frame
        stamps = [m[0] for m in msgs]
        assert max(stamps) - min(stamps) <= slop


def test_sync_never_matches_beyond_slop():
    out: list = []
    sync = ApproxTimeSync(2, 5_000_000, lambda *m: out.append(m))
    sync.add(0, 0, "a")
    sync.add(1, 6_000_000, "b")
    assert out == []
    sync.add(0, 10_000_000, "c")
    assert out == [("c", "b")]
    with pytest.raises(ValueError):
        ApproxTimeSync(0, 1, print)


def test_stamped_buffer_nearest():
    buf = StampedBuffer(horizon_ns=100)
    for t in (10, 20, 30, 200):
        buf.add(t, t)
    assert buf.nearest(190, 20) == 200
    assert buf.nearest(25, 100) is None  # 10..30 fell out of the 100 ns horizon behind 200
    assert buf.nearest(150, 20) is None


def test_pose_gate_holds_a_frame_until_the_poses_reach_its_time():
    gate = PoseGate(max_dt_ns=5, queue_size=2)
    assert gate.frame(100, "early") == []  # no pose yet: held, not dropped
    assert gate.pose(90, "p90") == []  # the poses have not reached t = 100
    assert gate.pose(102, "p102") == [(100, "early", "p102")]  # nearest of 90 and 102
    assert gate.frame(101, "now") == [(101, "now", "p102")]  # a pose within 5: at once
    assert gate.frame(96, "late") == [(96, "late", None)]  # the poses passed it with none near: dropped
    for t in (110, 120, 130):  # a stalled pose stream keeps only the newest queue_size frames
        assert gate.frame(t, t) == []
    assert gate.pose(200, "p200") == [(120, 120, None), (130, 130, None)]
    assert gate.pose(129, "p129") == []  # nothing left held


# ---- calibration files -----------------------------------------------------------------------------

def test_calibration_round_trip(tmp_path):
    cams = two_camera_rig() + [CameraModel("wrist", SMALL, np.eye(4), "ee", "")]
    save_cameras(tmp_path / "c.yaml", cams)
    back = load_cameras(tmp_path / "c.yaml")
    assert [(c.name, c.mount, c.serial, c.intrinsics) for c in back] == [
        (c.name, c.mount, c.serial, c.intrinsics) for c in cams]
    for a, b in zip(back, cams):
        np.testing.assert_allclose(a.T_base_camera, b.T_base_camera, atol=1e-12)
    assert [c.name for c in select_cameras(back, "wrist, front")] == ["front", "wrist"]


def test_example_lab_calibration_loads():
    cams = load_cameras("calibration/lab_d435.yaml")
    assert [c.name for c in cams] == ["front", "side"] and all(c.serial and c.mount == "base" for c in cams)
    assert all((c.intrinsics.width, c.intrinsics.height) == (640, 480) for c in cams)


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d["cameras"][0].pop("intrinsics"), "intrinsics"),
    (lambda d: d["cameras"][0]["intrinsics"].pop("fx"), "fx"),
    (lambda d: d["cameras"][0].__setitem__("T", np.diag([1, 2, 1, 1]).tolist()), "orthonormal"),
    (lambda d: d["cameras"][0].__setitem__("mount", "wrist"), "mount"),
    (lambda d: d["cameras"].append(dict(d["cameras"][0])), "duplicate"),
    (lambda d: d.__setitem__("base_frame", "world"), "base_frame"),
    (lambda d: d.__setitem__("cameras", []), "non-empty"),
])
def test_calibration_errors_are_named(mutate, match):
    d = cameras_to_dict(two_camera_rig())
    mutate(d)
    with pytest.raises(ValueError, match=match):
        cameras_from_dict(d)
    with pytest.raises(ValueError, match="not in"):
        select_cameras(two_camera_rig(), "front,top")


# ---- the sim cameras (flow2one.sim.cameras) feed the pipeline unchanged -------------------------------

def test_sim_camera_depth_lands_on_the_table():
    import mujoco

    from flow2one.sim.cameras import SimCameras, Snapshot, camera_models
    from flow2one.sim.scene import TCP_SITE, CameraSpec, lookat_xyaxes

    spec = CameraSpec("front", pos=(1.0, -0.3, 0.55), target=(0.45, 0.0, 0.1), width=160, height=120)
    xyaxes = " ".join(f"{v:.6g}" for v in lookat_xyaxes(spec.pos, spec.target, spec.up))
    model = mujoco.MjModel.from_xml_string(f"""
    <mujoco><worldbody>
      <geom type="box" pos="0.35 0 -0.02" size="0.6 0.6 0.02"/>
      <geom type="box" pos="0.5 0.1 0.05" size="0.03 0.03 0.05"/>
      <site name="{TCP_SITE}" pos="0.3 0 0.5"/>
      <camera name="front" pos="1.0 -0.3 0.55" xyaxes="{xyaxes}" fovy="{spec.fovy_deg}"/>
    </worldbody></mujoco>""")
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    cams = camera_models(model, data, (spec,))
    renderer = SimCameras(model, (spec,))
    try:
        _, depths = renderer.render(Snapshot.take(data, 0), rgb=False)
    finally:
        renderer.close()
    out = CloudPipeline(cams, (0.1, -0.5, -0.01), (0.9, 0.5, 0.6), 0.01).process(depths)
    on_table = np.abs(out[:, 2]) < 0.003
    on_box = (np.abs(out[:, 0] - 0.5) < 0.033) & (np.abs(out[:, 1] - 0.1) < 0.033) & (out[:, 2] < 0.103)
    assert on_table.mean() > 0.8 and (on_table | on_box).all()  # every point is on a real surface
