"""Recorded bags (our episode MCAPs, or rosbag2 MCAP/sqlite3 bags read through a topic profile) -> the episode
dataset, with a per-bag validation report; a bag that cannot be converted is reported, never modified."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from flow2one import spec
from flow2one.data.bags import BagError, find_bags, read_summary
from flow2one.data.cdr import BagInvalid, deserialize
from flow2one.data.episodes import Episode, EpisodeMeta, list_episodes, write_episode
from flow2one.data.profiles import (
    Plan,
    TopicProfile,
    canonical_messages,
    decode_compressed,
    plan,
)
from flow2one.geometry import matrix_to_rot6d, quat_to_matrix
from flow2one.perception.crop import CloudCrop

_NS = 1_000_000_000


@dataclass
class ConvertConfig:
    dt: float = spec.STEP_DT
    max_gap_s: float = 0.5  # a longer silence of a required topic fails the bag
    max_stamp_skew_s: float = 2.0  # |header stamp - receive time| above this = bad stamp
    max_bad_fraction: float = 0.05  # more bad stamps than this on a topic fails the bag
    min_steps: int = 10
    cameras: tuple[str, ...] = ()  # add rgb + depth of these cameras to the episodes
    image_size: tuple[int, int] | None = None  # (w, h) to resize images to
    skip_failed: bool = False  # leave out episodes whose success flag is false
    profile: TopicProfile = field(default_factory=TopicProfile)  # where our streams are in the bag
    calibration: str = ""  # cameras for clouds built from depth when the bag has no cloud ("" = the profile's)
    task: str = ""  # the task of bags without our episode metadata (third-party bags); "" = unknown
    success: bool | None = None  # their outcome; None = unknown (our own bags carry theirs)


@dataclass
class BagReport:
    bag: str
    status: str = "failed"  # converted | failed | skipped
    episode: str = ""
    steps: int = 0
    duration_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _stamp(msg) -> int:
    return int(msg.header.stamp.sec) * _NS + int(msg.header.stamp.nanosec)


def _cloud_xyz(msg) -> np.ndarray:
    fields = {f.name: f for f in msg.fields}
    if not all(k in fields and fields[k].datatype == 7 for k in "xyz"):  # 7 = PointField.FLOAT32
        raise BagInvalid("point cloud needs float32 x, y, z fields")
    n = int(msg.width) * int(msg.height)
    dtype = np.dtype({"names": list("xyz"), "formats": [">f4" if msg.is_bigendian else "<f4"] * 3,
                      "offsets": [fields[k].offset for k in "xyz"], "itemsize": int(msg.point_step)})
    rec = np.frombuffer(np.asarray(msg.data, dtype=np.uint8).tobytes(), dtype=dtype, count=n)
    return np.stack([rec["x"], rec["y"], rec["z"]], axis=-1).astype(np.float32)


def _image(msg, size: tuple[int, int] | None, depth: bool = False) -> np.ndarray:
    if hasattr(msg, "format"):  # CompressedImage
        try:
            img, enc = decode_compressed(msg, depth)
        except ValueError as exc:
            raise BagInvalid(str(exc)) from exc
        return _resize(img.astype(np.float32) / 1000.0 if depth else img, size)
    h, w, enc = int(msg.height), int(msg.width), msg.encoding
    data = np.asarray(msg.data, dtype=np.uint8)
    if enc in ("rgb8", "bgr8"):
        img = data.reshape(h, int(msg.step))[:, : w * 3].reshape(h, w, 3)
        img = img[..., ::-1] if enc == "bgr8" else img
    elif enc in ("16UC1", "mono16"):
        img = data.view(">u2" if msg.is_bigendian else "<u2").reshape(h, -1)[:, :w].astype(np.float32) / 1000.0
    elif enc == "32FC1":
        img = data.view(">f4" if msg.is_bigendian else "<f4").reshape(h, -1)[:, :w].astype(np.float32)
    else:
        raise BagInvalid(f"image encoding {enc!r} not supported (rgb8, bgr8, 16UC1, 32FC1)")
    return _resize(img, size)


def _resize(img: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    h, w = img.shape[:2]
    if size is not None and (w, h) != tuple(size):
        import cv2

        interp = cv2.INTER_AREA if img.dtype == np.uint8 else cv2.INTER_NEAREST
        img = cv2.resize(np.ascontiguousarray(img), tuple(size), interpolation=interp)
    return np.ascontiguousarray(img)


def _decode(kind: str, msg):
    """Message -> the value the dataset needs (checked); images are decoded later (load_images)."""
    if kind == "points":
        xyz = _cloud_xyz(msg)
        if xyz.shape[0] != spec.N_POINTS:
            raise BagInvalid(f"point cloud has {xyz.shape[0]} points; the dataset needs {spec.N_POINTS}")
        return xyz
    if kind == "pose":
        p, q = msg.pose.position, msg.pose.orientation
        return np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w])
    if kind == "joints":
        names = list(msg.name)
        if "gripper_width" not in names:
            raise BagInvalid("joint states lack 'gripper_width'")
        return float(np.asarray(msg.position)[names.index("gripper_width")])
    if kind == "command":
        if not msg.points or len(msg.points[0].positions) != spec.ACTION_DIM:
            raise BagInvalid(f"command must have a point with {spec.ACTION_DIM} positions")
        return np.asarray(msg.points[0].positions, dtype=np.float64)
    raise KeyError(f"no decoder for stream {kind!r}")


KINDS = {spec.POINTS_TOPIC: "points", spec.EE_POSE_TOPIC: "pose", spec.JOINT_STATES_TOPIC: "joints",
         spec.COMMAND_TOPIC: "command"}


def cloud_cameras(path: Path, cfg: ConvertConfig) -> list:
    """Calibrated cameras to build the cloud from, when the bag has no cloud topic: --cameras of the
    calibration file, or all of them."""
    from flow2one.perception.calibration import load_cameras

    calib = cfg.calibration or cfg.profile.calibration
    if not calib:
        raise BagInvalid(f"no point cloud topic ({cfg.profile.points}) in the bag and no calibration to build it "
                         "from depth (--calibration)")
    cams = load_cameras(calib)
    return [c for c in cams if c.name in cfg.cameras] if cfg.cameras else cams


def bag_plan(path: Path, cfg: ConvertConfig) -> tuple[Plan, list]:
    """What to read from this bag, and the cameras to build clouds with ([] when the bag has a cloud)."""
    have_points = read_summary(path).topics.get(cfg.profile.points, ("", 0))[1] > 0
    cloud_cams = [] if have_points else cloud_cameras(path, cfg)
    cams = list(dict.fromkeys([*cfg.cameras, *(c.name for c in cloud_cams)]))
    p = plan(path, cfg.profile, cams)
    if p.missing:
        extra = (f" (the calibration's cameras {[c.name for c in cloud_cams]} build the cloud: each needs a depth "
                 "topic in the bag)" if cloud_cams else "")
        raise BagInvalid(f"missing topics: {', '.join(p.missing)}{extra}")
    return p, cloud_cams


def load_streams(path: Path, cfg: ConvertConfig, report: BagReport, the_plan: Plan,
                 cloud_cams: list) -> dict[str, tuple[np.ndarray, list]]:
    """{kind: (stamps ns sorted, values)} with bad-stamp messages dropped (and counted)."""
    kinds = {t: k for t, k in KINDS.items() if not (cloud_cams and k == "points")}
    for cam in dict.fromkeys([*cfg.cameras, *(c.name for c in cloud_cams)]):
        kinds[spec.camera_topics(cam)["color"]] = f"rgb/{cam}"
        kinds[spec.camera_topics(cam)["depth"]] = f"depth/{cam}"
    raw: dict[str, list[tuple[int, object]]] = {k: [] for k in kinds.values()}
    bad: dict[str, list[str]] = {k: [] for k in kinds.values()}
    last: dict[str, int] = {}
    ordinal: dict[str, int] = {k: -1 for k in kinds.values()}
    for m in canonical_messages(path, cfg.profile, the_plan, decode_images=False):
        kind = kinds.get(m.topic)
        if kind is None:
            continue
        ordinal[kind] += 1
        msg = deserialize(m.data, m.msgtype)
        stamp = _stamp(msg)
        if stamp <= 0:
            bad[kind].append("zero stamp")
        elif abs(stamp - m.log_time_ns) > cfg.max_stamp_skew_s * _NS:
            bad[kind].append(f"stamp {(stamp - m.log_time_ns) / _NS:+.2f} s off its receive time")
        elif stamp < last.get(kind, -1):
            bad[kind].append("stamp went backwards")
        else:
            last[kind] = stamp
            # images: only the message's ordinal now; the few the grid needs are decoded in a second pass
            raw[kind].append((stamp, ordinal[kind] if "/" in kind else _decode(kind, msg)))
    topic_of = {k: t for t, k in kinds.items()}
    out = {}
    for kind, items in raw.items():
        topic, n_bad = topic_of[kind], len(bad[kind])
        if n_bad:
            frac = n_bad / (n_bad + len(items))
            text = f"{topic}: {n_bad} bad stamps dropped ({bad[kind][0]}, ...)"
            if frac > cfg.max_bad_fraction:
                raise BagInvalid(f"{text}: {frac:.0%} of the topic, more than {cfg.max_bad_fraction:.0%}")
            report.warnings.append(text)
        if len(items) < 2:
            raise BagInvalid(f"{topic}: fewer than 2 valid messages")
        stamps = np.array([s for s, _ in items], dtype=np.int64)
        gaps = np.diff(stamps) / _NS
        i = int(np.argmax(gaps))
        if gaps[i] > cfg.max_gap_s:
            raise BagInvalid(f"{topic}: gap of {gaps[i]:.2f} s at {(stamps[i] - stamps[0]) / _NS:.2f} s "
                             f"into the topic (max_gap_s={cfg.max_gap_s})")
        out[kind] = (stamps, [v for _, v in items])
    return out


def synchronise(streams: dict[str, tuple[np.ndarray, list]], cfg: ConvertConfig) -> dict[str, np.ndarray]:
    """Resample every stream on one dt grid (see the module docstring for the rule)."""
    t0 = max(s[0] for s, _ in streams.values())
    t1 = min(s[-1] for s, _ in streams.values())
    grid = np.arange(t0, t1 + 1, int(round(cfg.dt * _NS)), dtype=np.int64)
    if len(grid) < cfg.min_steps:
        raise BagInvalid(f"only {len(grid)} steps of {cfg.dt} s where all topics overlap (min_steps={cfg.min_steps})")

    def held(kind: str) -> list:
        stamps, values = streams[kind]
        idx = np.searchsorted(stamps, grid, side="right") - 1
        return [values[i] for i in idx]

    cstamps, cvals = streams["command"]
    cidx = np.minimum(np.searchsorted(cstamps, grid, side="left"), len(cstamps) - 1)
    poses, widths = held("pose"), held("joints")
    proprio = np.array([np.concatenate([xyz, matrix_to_rot6d(quat_to_matrix(q)), [w]])
                        for (xyz, q), w in zip(poses, widths)], dtype=np.float32)
    out = {"t": (grid - grid[0]) / _NS, "proprio": proprio,
           "action": np.array([cvals[i] for i in cidx], dtype=np.float32)}
    if "points" in streams:
        out["points"] = np.stack(held("points")).astype(np.float32)
    out["_grid"] = grid
    out["_pose"] = np.array([np.r_[xyz, q] for xyz, q in poses])
    for kind in streams:
        if "/" in kind:  # image streams: ordinals of the messages held at each grid time
            out[kind] = np.asarray(held(kind), dtype=np.int64)
    return out


def _intrinsics(msg):
    from flow2one.perception.camera_model import CameraIntrinsics

    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not K.any():
        return None
    return CameraIntrinsics.from_K(int(msg.width), int(msg.height), K, distortion_model=msg.distortion_model,
                                   distortion=tuple(float(v) for v in msg.d))


def load_images(path: Path, cfg: ConvertConfig, the_plan: Plan, arrays: dict[str, np.ndarray],
                cloud_cams: list) -> None:
    """Second pass: decode (and resize) only the images the grid holds, so memory stays O(steps); build
    the clouds from the held depth images when the bag has none (the deploy perception pipeline)."""
    image_kinds = [k for k in arrays if "/" in k]
    if not image_kinds:
        return
    topic_kind = {spec.camera_topics(k.split("/")[1])["color" if k.startswith("rgb") else "depth"]: k
                  for k in image_kinds}
    info_topics = {spec.camera_topics(c.name)["depth_info"]: c.name for c in cloud_cams}
    need = {k: set(arrays[k].tolist()) for k in image_kinds}
    ordinal = {k: -1 for k in image_kinds}
    decoded: dict[str, dict[int, np.ndarray]] = {k: {} for k in image_kinds}
    intrinsics: dict[str, object] = {}
    for m in canonical_messages(path, cfg.profile, the_plan, decode_images=False):
        if m.topic in info_topics and info_topics[m.topic] not in intrinsics:
            intr = _intrinsics(deserialize(m.data, m.msgtype))
            if intr is not None:
                intrinsics[info_topics[m.topic]] = intr
            continue
        kind = topic_kind.get(m.topic)
        if kind is None:
            continue
        ordinal[kind] += 1
        if ordinal[kind] in need[kind]:
            depth = kind.startswith("depth")
            # clouds need the depth at full size (the calibration's intrinsics); only dataset images are resized
            decoded[kind][ordinal[kind]] = _image(deserialize(m.data, m.msgtype), None, depth)
    if cloud_cams:
        arrays["points"] = build_clouds(cloud_cams, intrinsics, arrays, decoded)
    for kind in ("rgb", "depth"):
        views = []
        for cam in cfg.cameras:
            wanted = arrays[f"{kind}/{cam}"].tolist()
            imgs = [_resize(decoded[f"{kind}/{cam}"][i], cfg.image_size) for i in wanted]
            shapes = {v.shape for v in imgs}
            if len(shapes) != 1:
                raise BagInvalid(f"{cam} {kind}: images change size within the episode ({sorted(shapes)})")
            views.append(np.stack(imgs))
        if not views:
            continue
        shapes = {v.shape[1:] for v in views}
        if len(shapes) != 1:
            raise BagInvalid(f"{kind} images differ in size between cameras {cfg.cameras}: {sorted(shapes)}; "
                             "pass --image-size")
        arrays[kind] = np.stack(views, axis=1)
    if "depth" in arrays:
        arrays["depth"] = arrays["depth"].astype(np.float32)
    for k in image_kinds:
        arrays.pop(k)


def build_clouds(cams: list, intrinsics: dict, arrays: dict[str, np.ndarray],
                 decoded: dict[str, dict[int, np.ndarray]]) -> np.ndarray:
    """(steps, N_POINTS, 3) clouds from the depth images held at each grid step, as the pointcloud node
    builds them (the bag's CameraInfo intrinsics over the calibration file's, like the node)."""
    import dataclasses

    from flow2one.perception.cloud import CloudPipeline

    cams = [dataclasses.replace(c, intrinsics=intrinsics.get(c.name, c.intrinsics)) for c in cams]
    for c in cams:
        shape = next(iter(decoded[f"depth/{c.name}"].values())).shape
        if shape != (c.intrinsics.height, c.intrinsics.width):
            raise BagInvalid(f"camera {c.name}: depth images are {shape[1]}x{shape[0]} but its intrinsics "
                             f"{c.intrinsics.width}x{c.intrinsics.height} (record camera_info, or fix the calibration)")
    pipeline = CloudPipeline(cams, **CLOUD_DEFAULTS)
    clouds = []
    for i in range(len(arrays["t"])):
        pose = arrays["_pose"][i]
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = quat_to_matrix(pose[3:]), pose[:3]
        depths = [decoded[f"depth/{c.name}"][int(arrays[f"depth/{c.name}"][i])] for c in cams]
        clouds.append(pipeline.process(depths, T))
    return np.stack(clouds).astype(np.float32)


# The pointcloud node's defaults (config/*.yaml): the same crop and sampling as the deploy graph.
CLOUD_DEFAULTS = {"workspace_min": (0.1, -0.5, -0.01), "workspace_max": (0.9, 0.5, 0.6), "voxel_size": 0.01,
                  "n_points": spec.N_POINTS, "seed": 0}


def convert_bag(path: Path, cfg: ConvertConfig, report: BagReport) -> Episode | None:
    info = read_summary(path).episode
    if cfg.skip_failed and info is not None and info.success is False:
        report.status = "skipped"
        report.warnings.append("episode marked failed (--skip-failed)")
        return None
    the_plan, cloud_cams = bag_plan(path, cfg)
    arrays = synchronise(load_streams(path, cfg, report, the_plan, cloud_cams), cfg)
    load_images(path, cfg, the_plan, arrays, cloud_cams)
    arrays.pop("_grid")
    arrays.pop("_pose")
    if cloud_cams:
        report.warnings.append(f"cloud built from depth of {[c.name for c in cloud_cams]} (no "
                               f"{cfg.profile.points} in the bag)")
    if info is None:
        task, success = cfg.task, cfg.success
        if not (cfg.task and cfg.success is not None):
            report.warnings.append("no flow2one episode metadata; task/success from --task/--success "
                                   f"({task or 'unknown'}/{'unknown' if success is None else success})")
    else:
        task, success = cfg.task or info.task, info.success if cfg.success is None else cfg.success
        if info.recovered:
            report.warnings.append("recovered after a crash; success unknown")
    # the crop of the clouds: this conversion's when it builds them from depth, else the recorder's record of
    # the pointcloud node's (None in bags recorded before it was written)
    crop = CloudCrop.from_params(CLOUD_DEFAULTS).to_dict() if cloud_cams else info.cloud_crop if info else None
    meta = EpisodeMeta(task=task, source="teleop", success=success, dt=cfg.dt, note=info.note if info else "",
                       camera_names=list(cfg.cameras), cloud_crop=crop)
    return Episode(meta=meta, **arrays)


def convert_directory(bag_dir: str | Path, out_dir: str | Path, cfg: ConvertConfig | None = None,
                      append: bool = False, progress: bool = True) -> list[BagReport]:
    from tqdm import tqdm

    cfg = cfg or ConvertConfig()
    bags, partial = find_bags(bag_dir)
    root = Path(bag_dir)

    def name(p: Path) -> str:  # bags under a folder are named by their path in it
        return str(p.relative_to(root)) if root.is_dir() and p != root else p.name

    out = Path(out_dir)
    existing = list_episodes(out) if out.exists() else []
    if existing and not append:
        raise FileExistsError(f"{out} already holds {len(existing)} episodes; pass --append to add to them")
    index = 1 + max((int(p.stem.split("_")[1]) for p in existing), default=-1)
    reports = [BagReport(name(p), errors=[f"unfinished recording; run `flow2one recover-bag {p}` first"])
               for p in partial]
    for path in tqdm(bags, desc="converting bags", unit="bag", disable=not progress):
        report = BagReport(name(path))
        reports.append(report)
        try:
            episode = convert_bag(path, cfg, report)
        except (BagInvalid, BagError, ValueError) as exc:
            report.errors.append(str(exc))
            continue
        if episode is None:
            continue
        report.episode = write_episode(out, index, episode).name
        report.status, report.steps, report.duration_s = "converted", len(episode), float(episode.t[-1])
        index += 1
    out.mkdir(parents=True, exist_ok=True)
    (out / "convert_report.json").write_text(json.dumps([asdict(r) for r in reports], indent=2))
    return reports
