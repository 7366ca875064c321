# The two commands of README.md: `make demo` (setup + main job) and `make test` (setup + tests).
PY := .venv/bin/python
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export MUJOCO_GL := egl

.PHONY: setup demo test bench
setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m flow2one.cli demo

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) -m flow2one.cli bench
