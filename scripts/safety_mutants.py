"""Break the safety code on purpose, one limit at a time, and check that the safety tests notice.

Each mutant is a copy of the package with one line changed; tests/test_safety_attacks.py and the filter
and executor tests of tests/test_control_core.py run against it
(package copy first on PYTHONPATH) and must fail. Prints one JSON line per mutant and exits 1 if any
mutant survives. `make safety-mutants`; about a minute per mutant on 2 cores (hypothesis without shrinking).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from flow2one.paths import repo_root

ROOT = repo_root()  # the checkout whose package is mutated (the one the venv or PYTHONPATH imports)
PKG = ROOT / "ros2_ws" / "src" / "flow2one"
SAFETY = "flow2one/control/safety.py"
EXECUTOR = "flow2one/control/executor.py"
GUARD = "flow2one/control/joint_guard.py"

# (name, file, line fragment to replace, replacement)
MUTANTS = [
    ("stale-axis angular projection (the reported bug)", SAFETY,
     "        return project_two_balls(np.asarray(w_des, dtype=np.float64), np.asarray(w_prev, dtype=np.float64),\n"
     "                                 dmax, wmax)",
     "        d = w_des - w_prev\n        n = np.linalg.norm(d)\n"
     "        w = w_prev + d * (dmax / n) if n > dmax else w_des.copy()\n"
     "        return w if np.linalg.norm(w) <= wmax else (w_prev if np.linalg.norm(w_prev) >= wmax - 1e-12 "
     "else w * (wmax / np.linalg.norm(w)))"),
    ("no cone speed cap", SAFETY, "w_max = min(lim.ang_speed, float(_braking_speed(room, tau, lim.max_ang_accel)))",
     "w_max = lim.ang_speed"),
    ("angular acceleration ignored", SAFETY, "w_new = self._ball_step(w_des, w_prev, lim.max_ang_accel * tau, w_max)",
     "w_new = self._ball_step(w_des, w_prev, 1e3, w_max)"),
    ("no braking toward the walls", SAFETY, "_braking_speed(hi - p, tau, a)])", "np.full(3, np.inf)])"),
    ("linear speed x10", SAFETY, "np.full(3, lim.lin_speed), _braking_speed(hi", "np.full(3, 10 * lim.lin_speed), _braking_speed(hi"),
    ("linear acceleration x100", SAFETY, "v_hi = np.minimum.reduce([v_prev + a * tau,", "v_hi = np.minimum.reduce([v_prev + 100 * a * tau,"),
    ("lead check removed", SAFETY, "            if np.any(lag > lim.max_lead):", "            if False:"),
    ("gripper not clamped", SAFETY, "g = float(np.clip(g_des, lim.gripper_min, lim.gripper_max))", "g = float(g_des)"),
    ("6-D scale not normalised", SAFETY, "    c0, c1 = c0 / s0, c1 / s1\n", ""),
    ("measured state trusted", EXECUTOR, "            why = self._implausible(st)\n", "            why = None\n"),
    ("measured state checked only while streaming", EXECUTOR,
     "        why = None if self.state in (State.RUNNING, State.HOLDING) else self._implausible(st)\n",
     "        why = None\n"),
    ("e-stop release before the stop", EXECUTOR, "            elif self._estop_latched:\n                self._estop_release = True",
     "            else:\n                self._estop_latched = False"),
    ("watchdog on chunks only", EXECUTOR, "if no_chunk or now - self._last_cmd_mono > self.cfg.stop_after_s:", "if no_chunk:"),
    ("homing path unchecked", EXECUTOR, "        why = self._home_path_problem(self.robot.read_state().q)\n",
     "        why = None\n"),
    ("measured joints near their limits trusted", GUARD,
     "        over = np.maximum.reduce([self.q_lo_hard - q, q - self.q_hi_hard, self.q_lo_hard - rest, rest - self.q_hi_hard])\n",
     "        over = np.zeros(7)\n"),
    ("measured joint speed trusted", GUARD, "        if np.any(fast > 1.0):\n", "        if False:\n"),
    ("measured joints judged where they are, not where they stop", GUARD,
     "        rest = q + dq * self.stop_reaction_s + dq * np.abs(dq) / (2 * STOP_DECEL)\n", "        rest = q\n"),
    ("joint speed of the commanded step only", GUARD, "        twists = [self.approach_twist(err)]\n",
     "        twists = []\n"),
    ("one linear step to the target", GUARD, "PATH_STEPS = 4 ", "PATH_STEPS = 1 "),
    ("joint guard off", GUARD, '        """Why `cmd` (following `prev` after tau s) must not be sent with the arm at q, or None."""\n',
     '        """Why `cmd` (following `prev` after tau s) must not be sent with the arm at q, or None."""\n        return None\n'),
]


def main() -> int:
    survived = 0
    for name, rel, old, new in MUTANTS:
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "flow2one"
            shutil.copytree(PKG, copy, ignore=shutil.ignore_patterns("__pycache__"))
            path = copy / rel
            text = path.read_text()
            if text.count(old) != 1:
                print(json.dumps({"mutant": name, "error": "fragment not found once: update scripts/safety_mutants.py"}))
                survived += 1
                continue
            path.write_text(text.replace(old, new))
            env = dict(os.environ, PYTHONPATH=f"{copy}{os.pathsep}{ROOT}", FLOW2ONE_SAFETY_CHUNKS="3000")
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--hypothesis-profile=quick",
                                "tests/test_safety_attacks.py", "tests/test_control_core.py"],
                               cwd=ROOT, env=env, capture_output=True, text=True)
            failed = [ln.split(" - ")[0].split("::")[-1] for ln in r.stdout.splitlines() if ln.startswith("FAILED")]
            caught = r.returncode != 0 and bool(failed)
            survived += not caught
            print(json.dumps({"mutant": name, "caught": caught, "failing_tests": failed}), flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    if len(sys.argv) > 1:  # names to run (substrings), e.g. after changing one limit
        MUTANTS[:] = [m for m in MUTANTS if any(a in m[0] for a in sys.argv[1:])]
    sys.exit(main())
