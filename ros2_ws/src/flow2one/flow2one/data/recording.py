"""Episode recording logic (ROS-free): episode events -> one bag per episode in a directory.

The recorder node only forwards raw CDR messages and EPISODE_TOPIC events here, so the rules (what
starts, ends or drops an episode, which file it goes to, what survives a crash) are testable without ROS.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

from flow2one.data.bags import PARTIAL_SUFFIX, EpisodeBagWriter, EpisodeInfo, RecoveryResult, recover, recovered_path

EVENTS = ("start", "stop", "discard", "success", "failure")
_INDEX = re.compile(r"episode_(\d+)\.mcap")


@dataclass
class RecorderConfig:
    directory: str
    task: str = ""
    operator: str = ""
    compression: str = "lz4"
    flush_period_s: float = 0.5
    default_success: bool | None = None  # outcome of a plain "stop" when the task status gave none
    cloud_crop: dict | None = None  # the recorded clouds' crop (CloudCrop.to_dict()), written into each episode


class EpisodeRecorder:
    """Thread-safe: message callbacks and event callbacks may run on different executor threads.

    Topics whose name ends in one of `latched_suffixes` (camera_info by default) are cached between
    episodes and written at each episode start, because their publishers may send them only once.
    """

    def __init__(self, config: RecorderConfig, latched_suffixes: tuple[str, ...] = ("camera_info",)) -> None:
        self.config = config
        self.directory = Path(config.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._latched_suffixes = latched_suffixes
        self._latched: dict[str, tuple[str, bytes, str | None]] = {}
        self._qos: dict[str, str] = {}
        self._writer: EpisodeBagWriter | None = None
        self._lock = threading.Lock()
        self.task_success: bool | None = None  # last outcome reported by the task (sim task_status)
        self.task_hint = ""  # task name reported by the world; used when config.task is empty
        self.finished: list[Path] = []

    @property
    def recording(self) -> bool:
        return self._writer is not None

    @property
    def current(self) -> Path | None:
        return self._writer.path if self._writer else None

    def next_index(self) -> int:
        found = [int(m.group(1)) for p in self.directory.iterdir() if (m := _INDEX.match(p.name))]
        return max(found, default=-1) + 1

    def set_qos(self, topic: str, qos_yaml: str) -> None:
        self._qos[topic] = qos_yaml

    def on_message(self, topic: str, msgtype: str, data: bytes, t_ns: int) -> None:
        with self._lock:
            if topic.endswith(self._latched_suffixes):
                self._latched[topic] = (msgtype, bytes(data), self._qos.get(topic))
            if self._writer is not None:
                self._writer.add_topic(topic, msgtype, self._qos.get(topic))
                self._writer.write(topic, msgtype, data, t_ns)

    def handle_event(self, event: str, t_ns: int, note: str = "") -> str:
        """Apply an EPISODE_TOPIC event; returns a one-line description for logs."""
        event = event.strip().lower()
        if event not in EVENTS:
            raise ValueError(f"unknown episode event {event!r}; expected one of {', '.join(EVENTS)}")
        if event == "start":
            if self.recording:  # a second start ends the running episode without a verdict
                self.stop(None)
            return f"recording {self.start(t_ns, note)}"
        if not self.recording:
            return f"'{event}' ignored: not recording"
        if event == "discard":
            return f"discarded {self.discard()}"
        success = {"success": True, "failure": False}.get(event)
        if success is None:
            success = self.task_success if self.task_success is not None else self.config.default_success
        return f"saved {self.stop(success)} (success={success})"

    def start(self, t_ns: int, note: str = "") -> Path:
        with self._lock:
            if self._writer is not None:
                raise RuntimeError(f"already recording {self._writer.path}")
            index = self.next_index()
            info = EpisodeInfo(task=self.config.task or self.task_hint, note=note, index=index,
                               operator=self.config.operator, start_ns=t_ns, cloud_crop=self.config.cloud_crop)
            self._writer = EpisodeBagWriter(self.directory / f"episode_{index:05d}.mcap", info,
                                            compression=self.config.compression,
                                            flush_period_s=self.config.flush_period_s)
            self.task_success = None
            for topic, (msgtype, data, qos) in self._latched.items():
                self._writer.add_topic(topic, msgtype, qos)
                self._writer.write(topic, msgtype, data, t_ns)
            self._writer.flush()
            return self._writer.path

    def stop(self, success: bool | None) -> Path | None:
        with self._lock:
            if self._writer is None:
                return None
            if not self._writer.info.task:  # the world's task status arrived after the start
                self._writer.info.task = self.task_hint
            path = self._writer.close(success=success)
            self._writer = None
            self.finished.append(path)
            return path

    def discard(self) -> Path | None:
        with self._lock:
            if self._writer is None:
                return None
            path = self._writer.path
            self._writer.abort()
            self._writer = None
            return path

    def recover_unfinished(self) -> list[RecoveryResult]:
        """Turn `.part` files left by a crash into readable (success unknown) X.recovered.mcap episodes;
        the .part files stay (recover never deletes its input) and are skipped once recovered."""
        parts = sorted(self.directory.glob(f"*.mcap{PARTIAL_SUFFIX}"))
        return [recover(p) for p in parts if not recovered_path(p).exists()]

    def close(self) -> None:
        """Shut down cleanly: an episode in progress is saved with an undecided outcome."""
        self.stop(None)
