#!/usr/bin/env bash
# Control for the DART (and twenty-first stop's DAgger) chains: the same teacher fine-tune, distillation and
# student on the shipped 240 demos alone.
# Needs runs/fs/all: the shipped recipe's 240 demos, linked in reproduce's order (replan/README.md, fifteenth stop).
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root; outputs go to runs/s49/
F=".venv/bin/python -m flow2one.cli"
D=runs/s49/ctrl
mkdir -p $D
( time $F train-teacher --data runs/fs/all --out $D/teacher --warm-start models/sim_teacher --steps 3000 \
    --batch-size 16 --lr 3e-4 --stride 2 --seed 3 --threads 2 --no-progress ) > $D/teacher.log 2>&1
( time $F distill --teacher $D/teacher --data runs/fs/all --out $D/distill.safetensors --k 16 \
    --steps 50 --stride 2 --max-obs 0 --seed 0 --threads 2 --no-progress ) > $D/distill.log 2>&1
( time $F train-student --data $D/distill.safetensors --out $D/student --init-from $D/teacher \
    --steps 8000 --lr 0.001 --hypotheses 32 --batch-size 8 --pose-noise 0.015 --hand-mask 0.1 --ceiling-z 0.16 \
    --seed 0 --threads 2 --no-progress ) > $D/student.log 2>&1
mkdir -p runs/s49/ev_ctrl && ln -sfn "$PWD/$D/student" runs/s49/ev_ctrl/sim_student
for t in pick_place track; do  # tuning groups 40-45, 10 re-plans/s
  $F table1 --models runs/s49/ev_ctrl --rows 2 --tasks $t --seeds 6 --first-seed-group 40 --episodes 4 \
    --hz-repeats 3 --n-exec 32 --policy-rate-hz 10 --candidates 4 --max-obs-age-s 0.25 --out runs/s49/tun_ctrl_$t &
done
wait
echo CHAIN DONE
