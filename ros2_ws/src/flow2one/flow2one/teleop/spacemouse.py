"""SpaceMouse input over HID (pyspacemouse + hidapi) or from spacenavd's sensor_msgs/Joy (ROS-free).

pyspacemouse parses the raw HID reports with its per-model byte layout (devices.toml) and a named axis
convention; we use AxisConvention.ROS (x forward, y left, z up; rotations about those axes), so with
the default axis map pushing the puck away from the operator moves the gripper along +x of the base
when the operator stands behind the robot. `RecordedHid` replays captured reports through the same
parser, which is how the mapping is tested without a device and how a report capture is debugged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

AXES = ("x", "y", "z", "roll", "pitch", "yaw")
InputCallback = Callable[[np.ndarray, tuple[int, ...], float], None]


class RecordedHid:
    """Stands in for an easyhid device: returns captured HID reports one per read(), then nothing."""

    product_string = "recorded"
    manufacturer_string = "3Dconnexion"
    release_number = 0
    serial_number = ""

    def __init__(self, reports: Iterable[bytes]) -> None:
        self._reports = [bytes(r) for r in reports]
        self._i = 0

    @classmethod
    def from_file(cls, path: str | Path) -> RecordedHid:
        """One report per line as hex ("01 10 00 ..."), '#' comments allowed."""
        lines = [ln.split("#")[0].strip() for ln in Path(path).read_text().splitlines()]
        try:
            return cls(bytes.fromhex(ln) for ln in lines if ln)
        except ValueError as exc:
            raise ValueError(f"{path}: HID reports must be hex bytes per line: {exc}") from exc

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def set_nonblocking(self, _: bool) -> None:
        pass

    def read(self, size: int, timeout: int | None = None) -> bytes:
        if self._i >= len(self._reports):
            return b""
        self._i += 1
        return self._reports[self._i - 1][:size]

    @property
    def exhausted(self) -> bool:
        return self._i >= len(self._reports)


def open_spacemouse(device: str = "", hid: object | None = None):
    """A pyspacemouse device in the ROS axis convention: the first connected SpaceMouse, the named
    model (e.g. "SpaceMouseCompact"), or `hid` (a RecordedHid) parsed as that model."""
    import pyspacemouse
    from pyspacemouse import AxisConvention, SpaceMouseDevice, apply_axis_convention
    from pyspacemouse.loader import get_device_specs

    if hid is None:
        return pyspacemouse.open(device=device or None, nonblocking=True, axis_convention=AxisConvention.ROS)
    specs = get_device_specs()
    if device not in specs:
        raise ValueError(f"unknown SpaceMouse model {device!r}; known: {', '.join(specs)}")
    mouse = SpaceMouseDevice(info=apply_axis_convention(specs[device], AxisConvention.ROS), device=hid)
    mouse.open()
    return mouse


def state_to_input(state: object) -> tuple[np.ndarray, tuple[int, ...]]:
    """pyspacemouse SpaceMouseState -> (axes (6,) in [-1, 1], buttons)."""
    axes = np.clip(np.array([getattr(state, a) for a in AXES], dtype=np.float64), -1.0, 1.0)
    return axes, tuple(int(b) for b in state.buttons)


def joy_to_input(axes: Iterable[float], buttons: Iterable[int], scale: float = 1.0) -> tuple[np.ndarray, tuple[int, ...]]:
    """spacenav_node's Joy (axes: 3 linear then 3 angular, already normalised) -> our input tuple."""
    a = np.asarray(list(axes), dtype=np.float64)
    if a.shape != (6,):
        raise ValueError(f"a SpaceMouse Joy message has 6 axes, got {a.shape[0]}")
    return np.clip(a * scale, -1.0, 1.0), tuple(int(b) for b in buttons)


class SpaceMouseReader:
    """Polls a pyspacemouse device in a background thread and forwards each state change."""

    def __init__(self, mouse: object, on_input: InputCallback, poll_s: float = 0.004,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._mouse = mouse
        self._on_input = on_input
        self._poll_s = poll_s
        self._clock = clock
        self._stop = threading.Event()
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="spacemouse", daemon=True)

    def start(self) -> SpaceMouseReader:
        self._thread.start()
        return self

    def _run(self) -> None:
        last_t = None
        while not self._stop.is_set():
            try:
                state = self._mouse.read()
            except Exception as exc:  # unplugged: the mapper's input timeout then stops motion
                self.error = exc
                return
            if state.t != last_t:
                last_t = state.t
                axes, buttons = state_to_input(state)
                self._on_input(axes, buttons, self._clock())
            else:
                self._stop.wait(self._poll_s)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(1.0)
        close = getattr(self._mouse, "close", None)
        if callable(close):
            close()
