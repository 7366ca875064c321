"""ament_python package that `colcon build` builds on ROS 2 Jazzy and pip installs into a venv."""

import os
from glob import glob

from setuptools import find_packages, setup


def tree(top: str) -> list[tuple[str, list[str]]]:
    """data_files entries installing `top` (calibration/, models/: symlinks to the repository's) into
    share/flow2one, where flow2one.paths finds them; TensorRT engines are per machine and stay out."""
    out = []
    for d, _, files in sorted(os.walk(top, followlinks=True)):
        keep = [os.path.join(d, f) for f in sorted(files) if not f.endswith((".engine", ".tmp"))]
        if keep:
            out.append((os.path.join("share/flow2one", d), keep))
    return out


NODES = ["sim_world", "camera", "pointcloud", "policy", "executor", "teleop", "recorder", "replay", "view"]

setup(
    name="flow2one",
    version="0.1.0",
    packages=find_packages(include=["flow2one", "flow2one.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/flow2one"]),
        ("share/flow2one", ["package.xml"]),
        ("share/flow2one/launch", glob("launch/*.launch.py")),
        ("share/flow2one/config", glob("config/*.yaml")),
        *tree("calibration"),
        *tree("models"),
        ("share/flow2one/config/topics", glob("config/topics/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    python_requires=">=3.11",
    entry_points={
        "console_scripts": ["flow2one = flow2one.cli:entry"]
        + [f"{n} = flow2one.nodes.{n}:main" for n in NODES],
    },
)
