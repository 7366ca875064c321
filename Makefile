# The two commands of README.md: `make demo` (setup + main job) and `make test` (setup + tests).
PY := .venv/bin/python
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export MUJOCO_GL := egl

.PHONY: setup demo test bench models table1 safety-mutants check-robot-deps
setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m flow2one.cli demo

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests

bench: setup
	$(PY) -m flow2one.cli bench

# Reproduce the shipped models/sim_* (sim demos -> teacher -> distillation set -> student, + L1 Flow and
# regression) and the Table I analog in results/. See `flow2one reproduce --help` for scales and times.
models: setup
	$(PY) -m flow2one.cli reproduce --scale small --ship models

table1: setup
	$(PY) -m flow2one.cli table1

# Resolve docker/requirements-robot.txt for the robot PC (Python 3.12 manylinux) without installing: needs
# PyPI and a few minutes, so it is not part of `make test`.
check-robot-deps: setup
	PY=$(PY) bash scripts/check_robot_deps.sh

# Break each safety limit on purpose and check that tests/test_safety_attacks.py fails on every mutant.
safety-mutants: setup
	$(PY) scripts/safety_mutants.py
