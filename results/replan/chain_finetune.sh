#!/usr/bin/env bash
# usage: chain_finetune.sh NAME DEMOS_DIR
# The data-round chain of the twenty-first and twenty-third stops: the shipped teacher fine-tuned on DEMOS_DIR, a
# full distillation set from it, the shipped recipe's student, and its tuning cells (groups 40-45, 10 re-plans/s).
# `chain_finetune.sh ctrl runs/fs/all` (the shipped recipe's 240 demos, replan/README.md, fifteenth stop) is the
# control a data round must beat. Outputs go to $R/NAME and $R/tun_NAME_TASK, R=${CHAIN_RUNS:-runs/s49}.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root
NAME=$1 DATA=$2 R=${CHAIN_RUNS:-runs/s49}
F=".venv/bin/python -m flow2one.cli"
D=$R/$NAME
mkdir -p $D
( time $F train-teacher --data $DATA --out $D/teacher --warm-start models/sim_teacher --steps 3000 \
    --batch-size 16 --lr 3e-4 --stride 2 --seed 3 --threads 2 --no-progress ) > $D/teacher.log 2>&1
( time $F distill --teacher $D/teacher --data $DATA --out $D/distill.safetensors --k 16 \
    --steps 50 --stride 2 --max-obs 0 --seed 0 --threads 2 --no-progress ) > $D/distill.log 2>&1
( time $F train-student --data $D/distill.safetensors --out $D/student --init-from $D/teacher \
    --steps 8000 --lr 0.001 --hypotheses 32 --batch-size 8 --pose-noise 0.015 --hand-mask 0.1 --ceiling-z 0.16 \
    --seed 0 --threads 2 --no-progress ) > $D/student.log 2>&1
mkdir -p $R/ev_$NAME && ln -sfn "$PWD/$D/student" $R/ev_$NAME/sim_student
for t in pick_place track; do
  $F table1 --models $R/ev_$NAME --rows 2 --tasks $t --seeds 6 --first-seed-group 40 --episodes 4 \
    --hz-repeats 3 --n-exec 32 --policy-rate-hz 10 --candidates 4 --max-obs-age-s 0.25 --out $R/tun_${NAME}_$t &
done
wait
