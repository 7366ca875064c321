#!/usr/bin/env bash
# The ROS graph itself over Table I's held-out seed groups: `flow2one demo` (the sim graph: sim world ->
# pointcloud -> policy -> executor -> franky -> franky-sim, wall clock) on groups FIRST..FIRST+5, four episodes
# each (seeds 100000 + 1000 g .. +3, the seeds `flow2one table1 --first-seed-group FIRST --seeds 6 --episodes 4`
# runs), then one JSON line per task: successes, modes and the sim's pace. A group already in OUT is kept, so
# an interrupted run resumes. About 1 min a group on 2 cores (pick_place: 1.3 min).
#
#   [MODEL_DIR=models/sim_student] results/replan/graph_heldout.sh OUT [TASKS] [FIRST]
set -euo pipefail
out=${1:?usage: graph_heldout.sh OUT [TASKS] [FIRST]}
tasks=${2:-pick_place,track,reach_around}
first=${3:-20}
py=${PYTHON:-.venv/bin/python}
model=${MODEL_DIR:-models/sim_student}
for task in ${tasks//,/ }; do
  for g in $(seq "$first" $((first + 5))); do
    [ -f "$out/${task}_g$g/summary.json" ] && continue
    "$py" -m flow2one.cli demo --model-dir "$model" --tasks "$task" --episodes 4 --seed $((100000 + g * 1000)) --max-wall 3000 \
      --view-save '' --out "$out/${task}_g$g" | grep -E "^  $task"
  done
done
"$py" - "$out" "$tasks" "$first" <<'EOF'
import json, statistics, sys
from collections import Counter
out, tasks, first = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
for task in tasks:
    eps = [e for g in range(first, first + 6)
           for e in json.load(open(f"{out}/{task}_g{g}/summary.json"))["tasks"][task]["per_episode"]]
    print(json.dumps({"task": task, "successes": sum(e["success"] for e in eps), "episodes": len(eps),
                      "modes_of_successes": dict(Counter(e["mode"] for e in eps if e["success"])),
                      "sim_rtf_median": round(statistics.median(e["sim_rtf"] for e in eps), 2),
                      "failed_seeds": [e["seed"] for e in eps if not e["success"]]}))
EOF
