"""Episode bags: one rosbag2-compatible MCAP file per demonstration, written so a crash loses little.

Why MCAP with profile "ros2", "ros2msg" schemas and CDR payloads: `ros2 bag` (rosbag2_storage_mcap) on the
robot, the `mcap` CLI, Foxglove and `rosbags` all read such a file directly, while the recorder here needs
no rosbag2 (not on PyPI). The payload is the CDR bytes exactly as they came off the wire.

Crash safety: an episode is written to `<name>.mcap.part` and renamed to `<name>.mcap` only after the
summary and footer are written and fsync'd, so every `.mcap` is complete. The writer closes a chunk at
least every `flush_period_s` seconds, so a kill -9 loses at most that much of the unfinished episode;
`recover()` salvages every complete chunk of a `.part` file into a valid `.mcap`.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import yaml
from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap.records import Channel, Chunk, Message, Metadata, Schema
from mcap.stream_reader import StreamReader, breakup_chunk
from mcap.writer import CompressionType, Writer

PROFILE = "ros2"
SCHEMA_ENCODING = "ros2msg"
MESSAGE_ENCODING = "cdr"
EPISODE_METADATA = "flow2one_episode"  # our metadata record (the last one in a file wins)
ROSBAG2_METADATA = "rosbag2"  # what rosbag2_storage_mcap writes; `ros2 bag info` shows its custom_data
PARTIAL_SUFFIX = ".part"
ROS_DISTRO = "jazzy"  # message definitions are taken from this distro (the robot's)
_INFINITE = {"sec": 9223372036, "nsec": 854775807}  # rosbag2's spelling of an infinite QoS duration


class BagError(ValueError):
    """A bag that cannot be read as an episode (missing, truncated, not ros2 MCAP)."""


class BagAlreadyComplete(BagError):
    """recover() was given a finished bag: nothing to do (not a failure)."""


@dataclass
class EpisodeInfo:
    """Episode metadata stored in the bag (all values become strings in MCAP metadata)."""

    task: str = ""
    note: str = ""
    success: bool | None = None  # None = not decided (e.g. crashed or operator did not say)
    index: int = -1
    operator: str = ""
    recovered: bool = False
    start_ns: int = 0
    end_ns: int = 0
    cloud_crop: dict | None = None  # the crop of the recorded point clouds (flow2one.perception.crop.CloudCrop)
    extra: dict[str, str] = field(default_factory=dict)

    def to_strings(self) -> dict[str, str]:
        d = asdict(self)
        extra = d.pop("extra")
        out = {k: json.dumps(v) for k, v in d.items()}
        out.update({f"extra.{k}": str(v) for k, v in extra.items()})
        return out

    @classmethod
    def from_strings(cls, d: dict[str, str]) -> EpisodeInfo:
        known = {k: json.loads(v) for k, v in d.items() if k in cls.__dataclass_fields__ and k != "extra"}
        extra = {k[len("extra."):]: v for k, v in d.items() if k.startswith("extra.")}
        return cls(**known, extra=extra)


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str  # "sensor_msgs/msg/Image"
    log_time_ns: int
    publish_time_ns: int
    data: bytes  # CDR


@dataclass
class BagSummary:
    path: Path
    topics: dict[str, tuple[str, int]]  # topic -> (msgtype, message count)
    start_ns: int
    end_ns: int
    episode: EpisodeInfo | None


@cache
def message_definition(msgtype: str) -> str:
    """ros2msg schema text (the type and its dependencies) as rosbag2 stores it."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(getattr(Stores, f"ROS2_{ROS_DISTRO.upper()}"))
    if msgtype not in store.fielddefs:
        raise ValueError(f"unknown message type {msgtype!r} (expected e.g. 'sensor_msgs/msg/Image')")
    return store.generate_msgdef(msgtype, ros_version=2)[0]


@cache
def type_hash(msgtype: str) -> str:
    """The type's RIHS01 hash, as rosbag2 (Iron and later) stores it per topic; readers check it against
    their own definition before decoding."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(getattr(Stores, f"ROS2_{ROS_DISTRO.upper()}")).hash_rihs01(msgtype)


def qos_metadata(reliable: bool = True, transient_local: bool = False, depth: int = 10) -> str:
    """offered_qos_profiles in rosbag2 v9 form, so `ros2 bag play` re-offers the recorded QoS."""
    profile = {
        "history": "keep_last", "depth": depth,
        "reliability": "reliable" if reliable else "best_effort",
        "durability": "transient_local" if transient_local else "volatile",
        "deadline": _INFINITE, "lifespan": _INFINITE, "liveliness": "automatic",
        "liveliness_lease_duration": _INFINITE, "avoid_ros_namespace_conventions": False,
    }
    return yaml.safe_dump([profile], sort_keys=False)


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + PARTIAL_SUFFIX)


class EpisodeBagWriter:
    """Writes one episode; not thread-safe (the recorder node serialises calls)."""

    def __init__(self, path: str | Path, info: EpisodeInfo, compression: str = "lz4",
                 flush_period_s: float = 1.0, chunk_size: int = 4 * 1024 * 1024) -> None:
        self.path = Path(path)
        if self.path.suffix != ".mcap":
            raise ValueError(f"{self.path}: an episode bag must end in .mcap")
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists; refusing to overwrite a recorded episode")
        comp = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}
        if compression not in comp:
            raise ValueError(f"compression must be one of {sorted(comp)}, got {compression!r}")
        self.info = info
        self.partial = partial_path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.partial, "xb")
        self._writer = Writer(self._file, chunk_size=chunk_size, compression=comp[compression])
        self._writer.start(profile=PROFILE, library="flow2one")
        self._writer.add_metadata(EPISODE_METADATA, info.to_strings())
        self._writer.flush()
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, tuple[int, str]] = {}
        self._counts: dict[str, int] = {}
        self._qos: dict[str, str] = {}
        self._flush_period = flush_period_s
        self._last_flush = time.monotonic()
        self.first_ns: int | None = None
        self.last_ns: int | None = None

    @property
    def message_count(self) -> int:
        return sum(self._counts.values())

    def add_topic(self, topic: str, msgtype: str, qos: str | None = None) -> None:
        """Declare a topic (optional: write() declares on first use with reliable QoS)."""
        if topic in self._channels:
            if self._channels[topic][1] != msgtype:
                raise ValueError(f"topic {topic} already recorded as {self._channels[topic][1]}, not {msgtype}")
            return
        if msgtype not in self._schemas:
            self._schemas[msgtype] = self._writer.register_schema(
                msgtype, SCHEMA_ENCODING, message_definition(msgtype).encode())
        self._qos[topic] = qos or qos_metadata()
        cid = self._writer.register_channel(topic, MESSAGE_ENCODING, self._schemas[msgtype],
                                            {"offered_qos_profiles": self._qos[topic],
                                             "topic_type_hash": type_hash(msgtype)})
        self._channels[topic] = (cid, msgtype)
        self._counts[topic] = 0

    def write(self, topic: str, msgtype: str, data: bytes, log_time_ns: int,
              publish_time_ns: int | None = None) -> None:
        self.add_topic(topic, msgtype)
        cid = self._channels[topic][0]
        self._writer.add_message(cid, log_time_ns, bytes(data),
                                 log_time_ns if publish_time_ns is None else publish_time_ns,
                                 sequence=self._counts[topic])
        self._counts[topic] += 1
        self.first_ns = log_time_ns if self.first_ns is None else min(self.first_ns, log_time_ns)
        self.last_ns = log_time_ns if self.last_ns is None else max(self.last_ns, log_time_ns)
        now = time.monotonic()
        if now - self._last_flush >= self._flush_period:
            self.flush()

    def flush(self) -> None:
        """Close the current chunk and hand it to the OS: survives a kill -9 of this process."""
        self._writer.flush()
        self._last_flush = time.monotonic()

    def close(self, success: bool | None = None, note: str | None = None) -> Path:
        """Finish the file (summary, footer), fsync, and rename it to its final .mcap name."""
        self.info.success = success if success is not None else self.info.success
        if note is not None:
            self.info.note = note
        self.info.start_ns = self.first_ns or self.info.start_ns
        self.info.end_ns = self.last_ns or self.info.end_ns
        self._writer.add_metadata(EPISODE_METADATA, self.info.to_strings())
        self._writer.add_metadata(ROSBAG2_METADATA, {"serialized_metadata": self._rosbag2_metadata()})
        self._writer.finish()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the episode (operator discarded it)."""
        self._file.close()
        self.partial.unlink(missing_ok=True)

    def _rosbag2_metadata(self) -> str:
        topics = {t: (mt, self._counts[t], self._qos[t]) for t, (_, mt) in self._channels.items()}
        return rosbag2_metadata(self.path.name, topics, self.first_ns or 0, self.last_ns or 0, self.info)


def rosbag2_metadata(file_name: str, topics: dict[str, tuple[str, int, str]], start_ns: int, end_ns: int,
                     info: EpisodeInfo) -> str:
    """The YAML rosbag2_storage_mcap stores in its "rosbag2" metadata record (metadata.yaml v9 body).

    topics: name -> (msgtype, message count, offered_qos_profiles YAML).
    """
    duration = max(0, end_ns - start_ns)
    count = sum(c for _, c, _ in topics.values())
    body = {
        "version": 9,
        "storage_identifier": "mcap",
        "relative_file_paths": [file_name],
        "duration": {"nanoseconds": duration},
        "starting_time": {"nanoseconds_since_epoch": start_ns},
        "message_count": count,
        "topics_with_message_count": [
            {"topic_metadata": {"name": t, "type": mt, "serialization_format": MESSAGE_ENCODING,
                                "offered_qos_profiles": yaml.safe_load(qos) if qos else [],  # v9: a list
                                "type_description_hash": _safe_type_hash(mt)},
             "message_count": c}
            for t, (mt, c, qos) in topics.items()],
        "compression_format": "",
        "compression_mode": "",
        "files": [{"path": file_name, "starting_time": {"nanoseconds_since_epoch": start_ns},
                   "duration": {"nanoseconds": duration}, "message_count": count}],
        "custom_data": {f"flow2one.{k}": v for k, v in info.to_strings().items()},
        "ros_distro": ROS_DISTRO,
    }
    return yaml.safe_dump(body, sort_keys=False)


def _safe_type_hash(msgtype: str) -> str:
    try:
        return type_hash(msgtype)
    except (KeyError, ValueError):  # a recovered file may name a type this distro lacks: leave it unknown
        return ""


def _open_checked(path: Path):
    if not path.exists():
        raise BagError(f"{path}: no such bag")
    if path.name.endswith(PARTIAL_SUFFIX):
        raise BagError(f"{path}: unfinished episode (recorder crashed?); run `flow2one recover-bag {path}`")
    f = open(path, "rb")
    try:
        reader = make_reader(f)
        header = reader.get_header()
        summary = reader.get_summary()
    except (McapError, EOFError, struct.error, ValueError) as exc:
        f.close()
        raise BagError(f"{path}: not a complete MCAP file ({exc}); try `flow2one recover-bag {path}`") from exc
    if header.profile != PROFILE:
        f.close()
        raise BagError(f"{path}: MCAP profile is {header.profile!r}, expected {PROFILE!r} (a ROS 2 bag)")
    if summary is None:
        f.close()
        raise BagError(f"{path}: MCAP file has no summary; try `flow2one recover-bag {path}`")
    return f, reader, summary


def _rosbags_reader(path: Path):
    """rosbags' Reader on a rosbag2 bag directory (MCAP or sqlite3 storage) or a single .db3/.mcap file."""
    from rosbags.rosbag2 import Reader
    from rosbags.rosbag2.errors import ReaderError

    try:
        reader = Reader(path)
        reader.open()
    except (ReaderError, FileNotFoundError, KeyError, ValueError) as exc:
        raise BagError(f"{path}: not a readable rosbag2 bag ({exc})") from exc
    return reader


def _is_own_mcap(path: Path) -> bool:
    return path.is_file() and path.suffix == ".mcap"


def read_summary(path: str | Path) -> BagSummary:
    """Topics, time span and our episode metadata of a bag: a .mcap file (checked for completeness, with
    a recover hint), a rosbag2 bag directory (MCAP or sqlite3) or a .db3 file."""
    path = Path(path)
    if not _is_own_mcap(path):
        if not path.exists():
            raise BagError(f"{path}: no such bag")
        if path.name.endswith(PARTIAL_SUFFIX):
            _open_checked(path)  # raises the recover-bag hint
        reader = _rosbags_reader(path)
        try:
            topics = {t: (info.msgtype or "", int(info.msgcount)) for t, info in reader.topics.items()}
            custom = (getattr(reader.storage.metadata, "custom", None) or {}) if hasattr(reader.storage, "metadata") \
                else {}
            ours = {k[len("flow2one."):]: v for k, v in custom.items() if k.startswith("flow2one.")}
            episode = EpisodeInfo.from_strings(ours) if ours else _episode_of_files(path)
            return BagSummary(path, topics, reader.start_time if reader.message_count else 0,
                              reader.end_time if reader.message_count else 0, episode)
        finally:
            reader.close()
    f, reader, summary = _open_checked(path)
    with f:
        counts = summary.statistics.channel_message_counts if summary.statistics else {}
        topics = {}
        for cid, ch in summary.channels.items():
            schema = summary.schemas.get(ch.schema_id)
            topics[ch.topic] = (schema.name if schema else "", int(counts.get(cid, 0)))
        stats = summary.statistics
        episode = None
        for md in reader.iter_metadata():
            if md.name == EPISODE_METADATA:
                episode = EpisodeInfo.from_strings(md.metadata)
        return BagSummary(path, topics, stats.message_start_time if stats else 0,
                          stats.message_end_time if stats else 0, episode)


def _episode_of_files(path: Path) -> EpisodeInfo | None:
    """Our episode record inside the MCAP file(s) of a bag directory (None for third-party bags)."""
    for f in sorted(path.glob("*.mcap")) if path.is_dir() else []:
        try:
            return read_summary(f).episode
        except BagError:
            continue
    return None


def read_messages(path: str | Path, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
    """Messages in log-time order (optionally only `topics`), read with rosbags' rosbag2 Reader."""
    from rosbags.rosbag2.errors import ReaderError

    path = Path(path)
    if _is_own_mcap(path) or path.name.endswith(PARTIAL_SUFFIX):
        _open_checked(path)[0].close()  # a truncated file fails here with the recover-bag hint
    reader = _rosbags_reader(path)
    try:
        wanted = set(topics) if topics is not None else None
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        for c in conns:
            if c.msgtype is None or (getattr(c, "ext", None) and getattr(c.ext, "serialization_format", "cdr") != "cdr"):
                raise BagError(f"{path}: topic {c.topic} is not CDR")
        try:
            for conn, t, data in reader.messages(connections=conns):
                yield BagMessage(conn.topic, conn.msgtype, t, t, bytes(data))
        except (ReaderError, EOFError, struct.error, McapError) as exc:
            raise BagError(f"{path}: corrupt data ({exc}); try `flow2one recover-bag {path}`") from exc
    finally:
        reader.close()


BAG_SUFFIXES = (".mcap", ".db3")


def find_bags(path: str | Path) -> tuple[list[Path], list[Path]]:
    """(bags, unfinished .mcap.part files not yet recovered) under `path`: a bag directory (has
    metadata.yaml), a single .mcap/.db3 file, or a folder searched recursively for both. Raises BagError
    when there is none, so a wrong folder is not a silent "0 converted"."""
    root = Path(path)
    if not root.exists():
        raise BagError(f"{root}: no such file or directory")
    if root.is_file():
        if root.name.endswith(PARTIAL_SUFFIX):
            return [], [root]
        if root.suffix not in BAG_SUFFIXES:
            raise BagError(f"{root}: not a bag (expected {', '.join(BAG_SUFFIXES)} or a rosbag2 directory)")
        return [root], []
    bags: list[Path] = []
    parts: list[Path] = []
    for d, subdirs, files in os.walk(root):
        here = Path(d)
        if "metadata.yaml" in files:
            bags.append(here)
            subdirs.clear()  # a bag directory's files are its storage, not bags of their own
            continue
        subdirs.sort()
        for name in sorted(files):
            f = here / name
            if name.endswith(f".mcap{PARTIAL_SUFFIX}"):
                if not recovered_path(f).exists():
                    parts.append(f)
            elif f.suffix in BAG_SUFFIXES:
                bags.append(f)
    if not bags and not parts:
        raise BagError(f"{root}: no bags found (rosbag2 directories with metadata.yaml, .mcap or .db3 files, "
                       "searched recursively)")
    return sorted(bags), sorted(parts)


def recovered_path(path: Path) -> Path:
    """Where `recover()` writes by default: X.mcap.part and X.mcap both -> X.recovered.mcap, next to the
    input, which is never deleted or rewritten (a second try must still have the original)."""
    name = path.name.removesuffix(PARTIAL_SUFFIX)
    stem = name.removesuffix(".mcap")
    return path.with_name(f"{stem}.recovered.mcap")


@dataclass
class RecoveryResult:
    path: Path
    messages: int
    topics: dict[str, int]
    lost_bytes: int  # bytes after the last complete chunk (the part the crash cut off)
    reason: str


def recover(path: str | Path, out: str | Path | None = None) -> RecoveryResult:
    """Rewrite every complete chunk of a crashed recording into a valid, finished .mcap file.

    `path` is a `.mcap.part` file (or any MCAP missing its summary/footer); it is only read. The output
    defaults to `recovered_path(path)`; the episode metadata is kept with `recovered: true` and success
    unknown. Raises BagError for a file that is already complete or from which nothing could be saved.
    """
    path = Path(path)
    if not path.is_file():
        raise BagError(f"{path}: no such file")
    if not path.name.endswith(PARTIAL_SUFFIX):
        try:
            read_summary(path)
        except BagError:
            pass
        else:
            raise BagAlreadyComplete(f"{path}: already complete; nothing to recover")
    out = Path(out) if out is not None else recovered_path(path)
    if out.resolve() == path.resolve():
        raise BagError(f"{path}: the output must differ from the input (the input is never rewritten)")
    if out.exists():
        raise FileExistsError(f"{out} exists; refusing to overwrite")
    size = path.stat().st_size
    schemas: dict[int, Schema] = {}
    channels: dict[int, Channel] = {}
    messages: list[Message] = []
    info: EpisodeInfo | None = None
    good_end = 0
    reason = "complete"
    profile = ""
    with open(path, "rb") as f:
        reader = StreamReader(f, emit_chunks=True, validate_crcs=False)
        try:
            for record in reader.records:
                batch = breakup_chunk(record, validate_crc=True) if isinstance(record, Chunk) else [record]
                for rec in batch:
                    if isinstance(rec, Schema):
                        schemas[rec.id] = rec
                    elif isinstance(rec, Channel):
                        channels[rec.id] = rec
                    elif isinstance(rec, Message):
                        messages.append(rec)
                    elif isinstance(rec, Metadata) and rec.name == EPISODE_METADATA:
                        info = EpisodeInfo.from_strings(rec.metadata)
                    elif hasattr(rec, "profile"):
                        profile = rec.profile
                good_end = f.tell()
        except Exception as exc:  # McapError, EOFError, struct.error, zstd/lz4 errors on a cut chunk
            reason = f"stopped at byte {good_end} of {size} ({type(exc).__name__}{': ' if str(exc) else ''}{exc})"
    if profile and profile != PROFILE:
        raise BagError(f"{path}: MCAP profile {profile!r} is not {PROFILE!r}")
    if not messages:
        what = "not an MCAP file" if not profile else "no complete chunk with messages"
        raise BagError(f"{path}: nothing to recover ({what}; {reason}); nothing written")
    info = info or EpisodeInfo()
    info.recovered = True
    info.success = None
    if messages:
        info.start_ns = min(m.log_time for m in messages)
        info.end_ns = max(m.log_time for m in messages)
    tmp = out.with_name(out.name + ".recovering")
    counts: dict[str, int] = {}
    with open(tmp, "wb") as fo:
        w = Writer(fo, compression=CompressionType.ZSTD)
        w.start(profile=PROFILE, library="flow2one recover")
        schema_ids = {sid: w.register_schema(s.name, s.encoding, s.data) for sid, s in schemas.items()}
        chan_ids = {}
        for cid, ch in channels.items():
            chan_ids[cid] = w.register_channel(ch.topic, ch.message_encoding, schema_ids.get(ch.schema_id, 0),
                                               dict(ch.metadata))
        for m in sorted(messages, key=lambda m: m.log_time):
            if m.channel_id not in chan_ids:
                continue
            w.add_message(chan_ids[m.channel_id], m.log_time, m.data, m.publish_time, m.sequence)
            topic = channels[m.channel_id].topic
            counts[topic] = counts.get(topic, 0) + 1
        w.add_metadata(EPISODE_METADATA, info.to_strings())
        topics = {ch.topic: (schemas[ch.schema_id].name if ch.schema_id in schemas else "",
                             counts.get(ch.topic, 0), ch.metadata.get("offered_qos_profiles", ""))
                  for ch in channels.values()}
        w.add_metadata(ROSBAG2_METADATA, {"serialized_metadata": rosbag2_metadata(
            out.name, topics, info.start_ns, info.end_ns, info)})
        w.finish()
        fo.flush()
        os.fsync(fo.fileno())
    os.replace(tmp, out)
    return RecoveryResult(out, sum(counts.values()), counts, size - good_end, reason)
