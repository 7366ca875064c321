"""Depth images from several calibrated cameras -> one cropped, voxel-downsampled cloud of exactly N points.

Why it is fast (docs/ENVIRONMENT_FACTS.md: the naive numpy -> Open3D crop/voxel/farthest-point path caps
perception near 5 Hz):
- per-pixel rays are computed once per intrinsics (undistorted once with OpenCV when the model has
  distortion), and for fixed cameras pre-rotated into the base frame together with the depth interval in
  which each ray lies inside the workspace box (ray/box slab test), so the crop is two comparisons on the
  raw depth image and only surviving pixels are ever deprojected;
- pixels are strided where that keeps quality at the voxel size: the automatic stride keeps at least two
  samples per voxel width, 2 * s * z / f <= voxel (z: farthest depth of the box seen by the camera);
- voxel centroids by a hash of integer cell keys (numpy), and a seeded random subset instead of
  farthest-point sampling (train and deploy on this same pipeline so the policy sees one sampling).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flow2one.perception.camera_model import CameraIntrinsics, CameraModel
from flow2one.perception.crop import CloudCrop
from flow2one.spec import N_POINTS


def pixel_rays(intr: CameraIntrinsics, stride: int = 1) -> np.ndarray:
    """(h/s * w/s, 3) float64 rays with z = 1 in the optical frame for every `stride`-th pixel (row-major)."""
    v, u = np.mgrid[0:intr.height:stride, 0:intr.width:stride]
    uv = np.stack([u.ravel(), v.ravel()], axis=1).astype(np.float64)
    if any(abs(x) > 0 for x in intr.distortion):
        import cv2

        xy = cv2.undistortPoints(uv.reshape(-1, 1, 2), intr.K, np.asarray(intr.distortion, np.float64)).reshape(-1, 2)
    else:
        xy = np.stack([(uv[:, 0] - intr.cx) / intr.fx, (uv[:, 1] - intr.cy) / intr.fy], axis=1)
    return np.concatenate([xy, np.ones((len(xy), 1))], axis=1)


def box_depth_interval(rays_base: np.ndarray, origin: np.ndarray, lo: np.ndarray, hi: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Per ray (origin + d * ray), the [d_near, d_far] inside the box (slab method); empty rays get (inf, -inf)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (lo - origin) / rays_base
        t2 = (hi - origin) / rays_base
    near, far = np.minimum(t1, t2), np.maximum(t1, t2)
    # A ray parallel to a slab (component 0, where t1/t2 are inf or NaN) is inside it for every d, or none.
    par = rays_base == 0
    outside = par & ((origin < lo) | (origin > hi))
    near[par], far[par] = -np.inf, np.inf
    d_near, d_far = near.max(axis=1), far.min(axis=1)
    empty = outside.any(axis=1) | (d_far < np.maximum(d_near, 0.0))
    d_near[empty], d_far[empty] = np.inf, -np.inf
    return np.maximum(d_near, 0.0), d_far


@dataclass
class CloudStats:
    """What the last `process` call saw; the node reports it in diagnostics (an empty crop is a WARN)."""

    n_cropped: int = 0  # depth pixels (after striding) inside the workspace box
    n_voxels: int = 0
    padded: int = 0  # output rows that repeat or fill in (0 when enough voxels survived)


class _Camera:
    """Per-camera precomputation, rebuilt only when intrinsics, extrinsics or stride change.

    Rays are kept as separate x/y/z arrays (structure of arrays): gathers and fused multiply-adds on
    contiguous 1-D arrays are several times faster in numpy than on (N, 3) rows.
    """

    def __init__(self, cam: CameraModel, stride: int, lo: np.ndarray, hi: np.ndarray) -> None:
        self.cam, self.stride = cam, stride
        rays = pixel_rays(cam.intrinsics, stride)
        if cam.mount == "base":
            R, t = cam.T_base_camera[:3, :3], cam.T_base_camera[:3, 3]
            rays_base = rays @ R.T
            near, far = box_depth_interval(rays_base, t, lo, hi)
            # near > 0 even for a camera inside the box, so "no return" (0) never becomes the camera origin
            self.near, self.far = np.maximum(near, 1e-6).astype(np.float32), far.astype(np.float32)
            self.rays_base = [np.ascontiguousarray(rays_base[:, a], dtype=np.float32) for a in range(3)]
            self.t = t.astype(np.float32)
        else:  # optical-frame x, y of each ray (z = 1), turned into the base frame per call
            self.rays_xy = [np.ascontiguousarray(rays[:, a], dtype=np.float32) for a in range(2)]


Points = tuple[np.ndarray, np.ndarray, np.ndarray]  # x, y, z float32 columns


class CloudPipeline:
    """`process(depths) -> (n_points, 3) float32` in the base frame; the CONTRACTS perception API.

    Exactly `n_points` rows every call. Deterministic: the same depths (and seed) give the same cloud.
    When fewer voxels than n_points survive, the rest is filled with randomly chosen raw cropped points
    (real measurements, duplicates only when even those run out); an empty crop returns the box centre
    repeated (and `stats.n_cropped == 0`) so downstream shapes never change.
    """

    # Voxel grids up to this many cells (32 MiB of int32) are hashed through a lookup table of one entry per
    # cell, kept between calls: O(points), with no cell-sized allocation per call. A bincount over every cell
    # cost 2.9-10 ms for the 30k points of a recorded sim frame in the graphs' 488k-cell 1 cm grid, depending
    # on what the allocator had at hand, against 1.5 ms (`flow2one bench perception_cloud`, deploy_box_*,
    # compares the table with sorting). Larger grids (tiny voxels in a big box) sort the keys.
    DENSE_CELLS = 1 << 23

    def __init__(self, cameras: list[CameraModel], workspace_min, workspace_max, voxel_size: float,
                 n_points: int = N_POINTS, seed: int = 0, pixel_stride: int = 0) -> None:
        self.lo = np.asarray(workspace_min, dtype=np.float64).reshape(3)
        self.hi = np.asarray(workspace_max, dtype=np.float64).reshape(3)
        if not (np.isfinite(self.lo).all() and np.isfinite(self.hi).all() and (self.hi > self.lo).all()):
            raise ValueError(f"workspace box must be finite with max > min, got {self.lo} .. {self.hi}")
        if not voxel_size > 0:
            raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
        if n_points < 1:
            raise ValueError(f"n_points must be >= 1, got {n_points}")
        if pixel_stride < 0:
            raise ValueError(f"pixel_stride must be >= 0 (0 = automatic), got {pixel_stride}")
        if not cameras:
            raise ValueError("CloudPipeline needs at least one camera")
        self.voxel = float(voxel_size)
        self.n_points, self.seed, self.pixel_stride = int(n_points), int(seed), int(pixel_stride)
        self.dims = np.maximum(np.ceil((self.hi - self.lo) / self.voxel).astype(np.int64), 1)
        self.n_cells = int(np.prod(self.dims))
        self.stats = CloudStats()
        self._lut: np.ndarray | None = None  # voxelize's cell table, allocated on first use
        self._cams = [_Camera(c, self._stride(c), self.lo, self.hi) for c in cameras]

    @property
    def crop(self) -> CloudCrop:
        """The box and voxel size this pipeline applies: what episodes and model cards record of it."""
        return CloudCrop(tuple(self.lo.tolist()), tuple(self.hi.tolist()), self.voxel)

    @property
    def cameras(self) -> list[CameraModel]:
        return [c.cam for c in self._cams]

    def auto_stride(self, cam: CameraModel) -> int:
        """Largest pixel stride keeping >= 2 depth samples per voxel width at the farthest box depth."""
        corners = np.array(np.meshgrid(*zip(self.lo, self.hi), indexing="ij")).reshape(3, -1).T
        if cam.mount == "base":
            T_cam_base = np.linalg.inv(cam.T_base_camera)
            z_far = float((corners @ T_cam_base[:3, :3].T + T_cam_base[:3, 3])[:, 2].max())
        else:  # wrist camera: it moves inside/near the box, so the box diagonal bounds the depth
            z_far = float(np.linalg.norm(self.hi - self.lo))
        f = min(cam.intrinsics.fx, cam.intrinsics.fy)
        return max(1, int(self.voxel * f / (2.0 * max(z_far, 1e-3))))

    def _stride(self, cam: CameraModel) -> int:
        return self.pixel_stride or self.auto_stride(cam)

    def set_camera(self, i: int, cam: CameraModel) -> None:
        """Replace camera i (new CameraInfo or calibration); the precomputation is redone only if it changed."""
        old = self._cams[i].cam
        if (cam.intrinsics != old.intrinsics or cam.mount != old.mount
                or not np.array_equal(cam.T_base_camera, old.T_base_camera)):
            self._cams[i] = _Camera(cam, self._stride(cam), self.lo, self.hi)

    def _points(self, c: _Camera, depth: np.ndarray, T_base_ee: np.ndarray | None) -> Points:
        """Cropped base-frame points of one camera."""
        intr = c.cam.intrinsics
        if depth.shape != (intr.height, intr.width):
            raise ValueError(f"camera {c.cam.name}: depth is {depth.shape}, intrinsics say "
                             f"{(intr.height, intr.width)}")
        if depth.dtype.kind != "f":
            raise ValueError(f"camera {c.cam.name}: depth must be float metres, got {depth.dtype} "
                             "(convert 16UC1 millimetres first)")
        d = depth[::c.stride, ::c.stride].ravel()
        if c.cam.mount == "base":  # crop = per-pixel depth interval of the ray inside the box
            idx = np.flatnonzero((d >= c.near) & (d <= c.far))  # NaN and 0 fail both
            dd = d[idx]
            return tuple(r[idx] * dd + t for r, t in zip(c.rays_base, c.t))
        if T_base_ee is None:
            raise ValueError(f"camera {c.cam.name} is mounted on the end effector: process() needs T_base_ee")
        T = (np.asarray(T_base_ee, dtype=np.float64) @ c.cam.T_base_camera).astype(np.float32)
        idx = np.flatnonzero(d > 0)  # drops NaN too
        dd, rx, ry = d[idx].astype(np.float32, copy=False), c.rays_xy[0][idx], c.rays_xy[1][idx]
        # base = R @ (rx, ry, 1) * d + t, one axis at a time (10x faster than (N, 3) @ R.T in float64)
        p = [(T[a, 0] * rx + T[a, 1] * ry + T[a, 2]) * dd + T[a, 3] for a in range(3)]
        inside = np.ones(len(dd), bool)
        for a in range(3):
            inside &= (p[a] >= np.float32(self.lo[a])) & (p[a] <= np.float32(self.hi[a]))
        keep = np.flatnonzero(inside)
        return p[0][keep], p[1][keep], p[2][keep]

    def process(self, depths: list[np.ndarray], T_base_ee: np.ndarray | None = None) -> np.ndarray:
        if len(depths) != len(self._cams):
            raise ValueError(f"got {len(depths)} depth images for {len(self._cams)} cameras")
        parts = [self._points(c, np.asarray(d), T_base_ee) for c, d in zip(self._cams, depths)]
        pts = tuple(np.concatenate([p[a] for p in parts]) for a in range(3)) if len(parts) > 1 else parts[0]
        vox = self.voxelize(pts)
        self.stats = CloudStats(n_cropped=len(pts[0]), n_voxels=len(vox))
        return self._sample(vox, pts)

    def voxelize(self, pts: Points) -> np.ndarray:
        """(M, 3) centroids of the points in each occupied voxel of the box grid (as Open3D's voxel_down_sample)."""
        n = len(pts[0])
        if n == 0:
            return np.zeros((0, 3), np.float32)
        key = np.zeros(n, np.int64)
        for a in range(3):
            i = ((pts[a] - np.float32(self.lo[a])) * np.float32(1.0 / self.voxel)).astype(np.int64)
            np.clip(i, 0, self.dims[a] - 1, out=i)  # float rounding at the box faces
            key = key * self.dims[a] + i
        if self.n_cells <= self.DENSE_CELLS:
            if self._lut is None:
                self._lut = np.empty(self.n_cells, np.int32)
            lut, rows = self._lut, np.arange(n, dtype=np.int32)
            # Every entry read below was written in this call, so the table is never cleared: one
            # representative point per cell (the last writer), cells in key order (as sorting gives them)
            lut[key] = rows
            first = np.flatnonzero(lut[key] == rows)
            first = first[np.argsort(key[first])]
            lut[key[first]] = np.arange(len(first), dtype=np.int32)
            inv = lut[key]
            counts = np.bincount(inv, minlength=len(first))
        else:
            _, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
        out = np.empty((len(counts), 3), dtype=np.float32)
        for a in range(3):
            out[:, a] = np.bincount(inv, weights=pts[a], minlength=len(counts)) / counts
        return out

    def _sample(self, vox: np.ndarray, raw: Points) -> np.ndarray:
        n, rng = self.n_points, np.random.default_rng(self.seed)
        if len(vox) >= n:
            return vox[rng.choice(len(vox), n, replace=False)]
        n_raw = len(raw[0])
        if n_raw == 0:
            self.stats.padded = n
            return np.tile(((self.lo + self.hi) / 2).astype(np.float32), (n, 1))
        extra = n - len(vox)
        pick = rng.choice(n_raw, extra, replace=n_raw < extra)
        self.stats.padded = extra
        return np.concatenate([vox, np.stack([r[pick] for r in raw], axis=1)]).astype(np.float32, copy=False)
