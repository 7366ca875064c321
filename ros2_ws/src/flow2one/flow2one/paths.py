"""Where calibration/ and models/ live: the one place every node and tool resolves relative paths from.

A source checkout keeps them at the repository root; `colcon build` (plain or --symlink-install) installs
them into share/flow2one; a lab may keep its own anywhere and point FLOW2ONE_ROOT at it. Computing the
root from `__file__` breaks in a plain colcon install (the module then lives under install/.../site-packages),
so nothing else in the package does that.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "FLOW2ONE_ROOT"
PACKAGE = "flow2one"
# ros2_ws/src/flow2one/flow2one/paths.py -> the ament package (ros2_ws/src/flow2one) and the repository root of a
# source checkout (or pip -e install).
_PACKAGE_SRC = Path(__file__).resolve().parents[1]
_CHECKOUT = _PACKAGE_SRC.parents[2]


def repo_root() -> Path:
    """The repository this package was imported from: for tests and tools that read the repository's own files
    (results/, tests/, docs/). Meaningful in a source checkout only; data goes through data_root()."""
    return _CHECKOUT


def config_dir() -> Path:
    """config/ of the package: the source tree (pip -e) or share/flow2one/config (colcon install)."""
    src = _PACKAGE_SRC / "config"
    if src.is_dir():
        return src
    from ament_index_python.packages import get_package_share_directory  # only in installed layouts

    return Path(get_package_share_directory(PACKAGE)) / "config"


def _holds_data(root: Path) -> bool:
    return (root / "calibration").is_dir() or (root / "models").is_dir()


def _installed_share() -> Path | None:
    """share/flow2one of a colcon install found through the ament index (AMENT_PREFIX_PATH), if any."""
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory(PACKAGE))
    except (ImportError, LookupError, OSError, ValueError):  # no ament, not installed, AMENT_PREFIX_PATH unset
        return None


def data_root() -> Path:
    """The directory holding calibration/ and models/.

    Order: FLOW2ONE_ROOT when set (a lab's own calibration and models win over the copies a build installed;
    it must exist), then share/flow2one of a colcon install, then the source checkout. When none holds
    them, the checkout is returned so error messages name the path a user expects.
    """
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"{ENV_VAR}={env} is not a directory (it should hold calibration/ and models/)")
        return root.resolve()
    share = _installed_share()
    if share is not None and _holds_data(share):
        return share
    return _CHECKOUT


def resolve(path: str | Path) -> Path:
    """`path` as given when absolute or present relative to the cwd, else under data_root()."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return data_root() / p
