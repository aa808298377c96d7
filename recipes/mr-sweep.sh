#!/usr/bin/env bash
# Every adaptation method on mr, one epoch each, then one comparison table (docs/methods.md):
#   bash recipes/mr-sweep.sh                 # runs/sweep-<method>/, then runs/report-mr-sweep/
#   EPOCHS=3 THREADS=2 bash recipes/mr-sweep.sh
# Each run is recipes/mr-lora.yaml with the method swapped (and the learning rate that suits it). A run whose
# summary.json exists is skipped, so an interrupted sweep continues where it stopped. The zero-shot and
# few-shot baselines are scored once (in the lora run) and appear in the report as rows of their own.
set -euo pipefail
EPOCHS=${EPOCHS:-1}
THREADS=${THREADS:-1}
TUNECRAFT=${TUNECRAFT:-tunecraft}

run() {  # run NAME LR METHOD-YAML [more overrides]
  local name=$1 lr=$2 method=$3; shift 3
  if [ -f "runs/sweep-$name/summary.json" ]; then echo "sweep-$name: done before, skipped"; return; fi
  $TUNECRAFT train recipes/mr-lora.yaml "name=sweep-$name" "method=$method" "train.lr=$lr" \
    "train.epochs=$EPOCHS" "train.num_threads=$THREADS" "$@" --overwrite --no-progress
}

run lora      1e-3 '{name: lora, r: 8, alpha: 16}'
run full      5e-5 '{name: full}'                                 baselines.zero_shot=false baselines.shots=[]
run freeze    1e-4 '{name: freeze, layers: 3}'                    baselines.zero_shot=false baselines.shots=[]
run rslora    1e-3 '{name: lora, r: 8, alpha: 16, rslora: true}'  baselines.zero_shot=false baselines.shots=[]
run dora      1e-3 '{name: lora, r: 8, alpha: 16, dora: true}'    baselines.zero_shot=false baselines.shots=[]
run adalora   2e-3 '{name: adalora}'                              baselines.zero_shot=false baselines.shots=[]
run ia3       1e-2 '{name: ia3}'                                  baselines.zero_shot=false baselines.shots=[]
run adapter   1e-3 '{name: adapter}'                              baselines.zero_shot=false baselines.shots=[]
run prefix    1e-2 '{name: prefix}'                               baselines.zero_shot=false baselines.shots=[]
run prompt    3e-2 '{name: prompt}'                               baselines.zero_shot=false baselines.shots=[]
run ptuning   1e-2 '{name: ptuning}'                              baselines.zero_shot=false baselines.shots=[]

$TUNECRAFT report runs/sweep-* --out runs/report-mr-sweep
