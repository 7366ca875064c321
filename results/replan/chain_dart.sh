#!/usr/bin/env bash
# usage: chain_dart.sh [NAME [SIM_DEMOS_FLAGS...]]
# DART on pick_place: 40 demos with the arm pushed 1.5 cm off the expert's path (its clean target recorded),
# linked after the shipped recipe's 240 (runs/fs/all), then chain_finetune.sh NAME on all 280. Twenty-third stop:
# `chain_dart.sh` (NAME dart); twenty-fourth: `CHAIN_RUNS=runs/s50 chain_dart.sh dartg --dart-clean-grasp`.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root
F=".venv/bin/python -m flow2one.cli"
N=${DART_M:-0.015}
NAME=${1:-dart}
D=${CHAIN_RUNS:-runs/s49}/$NAME
mkdir -p $D
for s in 9000 9100; do
  ( time $F sim-demos --task pick_place --episodes 20 --seed $s --dart-noise $N "${@:2}" --out $D/d$s ) > $D/d$s.log 2>&1 &
done
wait
rm -rf $D/agg && mkdir $D/agg
i=0
for p in runs/fs/all/episode_*.npz $D/d9000/pick_place/episode_*.npz $D/d9100/pick_place/episode_*.npz; do
  ln -s "$(readlink -f "$p")" $D/agg/$(printf 'episode_%05d.npz' $i); i=$((i+1))
done
echo "agg: $i episodes"
bash results/replan/chain_finetune.sh $NAME $D/agg
