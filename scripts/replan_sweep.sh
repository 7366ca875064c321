#!/bin/bash
# Re-planning sweep of one model: closed-loop success per re-plan rate, through the deployed loop
# (`flow2one table1`: the policy node's step and the executor core on the sim clock). Run it on your own
# model before raising `rate_hz` in config/deploy.yaml: a model that loses ground when it re-plans often is
# better deployed at the rate it does best at.
#
#   scripts/replan_sweep.sh MODELS_DIR OUT_DIR [TASKS] [FIRST_GROUP] [GROUPS] [RATES]
#     MODELS_DIR  holds sim_student/ (and sim_teacher/ for row 0); OUT_DIR gets one table1 run per rate
#     TASKS       comma list (default track); FIRST_GROUP/GROUPS the seed groups (default 40, 6: tuning
#                 groups never used in a reported table); RATES re-plans per second (default "1.25 5 10 20")
# Rows (default 2, the student) in $ROWS, episodes per group (default 4) in $EPISODES, extra table1 options
# in $TABLE1_ARGS, e.g. TABLE1_ARGS="--set policy.handoff_window_s=0.3".
set -euo pipefail
models=${1:?MODELS_DIR}; out=${2:?OUT_DIR}; tasks=${3:-track}; first=${4:-40}; groups=${5:-6}
rates=${6:-1.25 5 10 20}
root=$(cd "$(dirname "$0")/.." && pwd)
flow2one=${FLOW2ONE:-$([ -x "$root/.venv/bin/flow2one" ] && echo "$root/.venv/bin/flow2one" || echo flow2one)}
mkdir -p "$out"
for r in $rates; do
  # n_exec 32: the whole chunk runs when no newer one comes; at a higher rate a newer one always does
  $flow2one table1 --models "$models" --rows ${ROWS:-2} --tasks "$tasks" --seeds "$groups" \
    --first-seed-group "$first" --episodes "${EPISODES:-4}" --hz-repeats 3 --policy-rate-hz "$r" --n-exec 32 \
    --out "$out/rate_$r" ${TABLE1_ARGS:-} > "$out/rate_$r.log" 2>&1 || echo "rate $r failed: see $out/rate_$r.log"
  # the success table: from its header to the first blank line
  awk '/^\| policy \| passes/{on=1; next} on && /^$/{exit} on && !/^\|---/' "$out/rate_$r/table1.md" 2>/dev/null \
    | sed "s/^/rate $r: /" || true
done
