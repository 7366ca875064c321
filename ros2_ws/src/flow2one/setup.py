"""ament_python package that `colcon build` builds on ROS 2 Jazzy and pip installs into a venv."""

from glob import glob

from setuptools import find_packages, setup

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
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    python_requires=">=3.11",
    entry_points={
        "console_scripts": ["flow2one = flow2one.cli:main"]
        + [f"{n} = flow2one.nodes.{n}:main" for n in NODES],
    },
)
