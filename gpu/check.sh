#!/usr/bin/env bash
# The GPU proof of tunecraft, one script for a bare GPU machine (no network, the image's own torch/transformers):
#   bash gpu/check.sh          # on the GPU machine, from the repo root, with gpu/carry (from gpu/prepare.sh)
#   bash gpu/check.sh --cpu    # the dry run: tiny sizes, CUDA-only steps skipped with the reason (tests use it)
# Each step runs in its own process under `timeout`, writes WORK/steps/STEP.json and prints one line
# (passed / failed / skipped and why); OUT/summary.json gathers them, OUT/check.log holds everything printed.
# Environment: OUT (default gpu/out), GPU_CHECK_WORK (runs and models; default /tmp/tunecraft-gpu-check-MODE, kept
# out of OUT since the device tool brings back only a few small files), GPU_CHECK_DATA (default gpu/carry/data),
# GPU_CHECK_BUDGET (seconds for the whole script, default 450), PYTHON (default python3).
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=gpu
[ "${1:-}" = "--cpu" ] && MODE=cpu
STARTED=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-450}
PY=${PYTHON:-python3}
export OUT=${OUT:-$ROOT/gpu/out}
export GPU_CHECK_WORK=${GPU_CHECK_WORK:-${TMPDIR:-/tmp}/tunecraft-gpu-check-$MODE}
export GPU_CHECK_DATA=${GPU_CHECK_DATA:-$ROOT/gpu/carry/data}
WHEELS=${GPU_CHECK_WHEELS:-$ROOT/gpu/carry/wheels}
SITE=$GPU_CHECK_WORK/site
mkdir -p "$OUT"
rm -rf "$GPU_CHECK_WORK/steps" "$GPU_CHECK_WORK/runs"
mkdir -p "$GPU_CHECK_WORK/steps"
LOG=$OUT/check.log
: >"$LOG"

export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH}
if [ "$MODE" = cpu ]; then
  export GPU_CHECK_CPU=1 CUDA_VISIBLE_DEVICES=""
fi

say() { echo "$*" | tee -a "$LOG"; }
record() { "$PY" "$ROOT/gpu/check.py" record "$@" 2>&1 | tee -a "$LOG"; }

say "tunecraft GPU check ($MODE) $(date -u '+%Y-%m-%d %H:%M:%S UTC'), budget ${BUDGET}s; OUT=$OUT WORK=$GPU_CHECK_WORK"

# install: only the wheels the image lacks (pydantic, seqeval, bitsandbytes...), never tunecraft's pinned deps
if [ "$MODE" = cpu ]; then
  record install skipped "CPU dry run: this environment's own packages are used"
elif ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  record install skipped "no wheels in $WHEELS: run gpu/prepare.sh here and carry gpu/carry"
else
  # a wheel of a package the image already has in a version at least as new stays out: an older copy ahead on
  # PYTHONPATH would shadow what the image's torch and transformers were installed with
  wheels=$("$PY" - "$WHEELS" <<'PYEOF'
import sys
from importlib import metadata
from pathlib import Path

from packaging.version import Version

for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    name, version = wheel.name.split("-")[:2]
    try:
        if Version(metadata.version(name)) >= Version(version):
            continue
    except metadata.PackageNotFoundError:
        pass
    print(wheel)
PYEOF
)
  if [ -z "$wheels" ]; then
    record install passed "the image already has every carried package"
  elif timeout -k 5 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" $wheels >>"$LOG" 2>&1; then
    export PYTHONPATH=$SITE:$PYTHONPATH
    record install passed "$(echo $wheels | wc -w) wheels into $SITE: $(for w in $wheels; do basename "$w" | cut -d- -f1-2; done | tr '\n' ' ')"
  else
    record install failed "pip install of the carried wheels failed (rc $?, see check.log)"
  fi
fi

# step name and its time box in seconds
if [ "$MODE" = gpu ]; then
  STEPS="data:30 env:40 precision:90 accumulation:45 resume:60 fsdp:75 qlora:60 plan:70 speed:180 serving:5"
else
  STEPS="data:40 env:30 precision:60 accumulation:30 resume:40 fsdp:90 qlora:30 plan:40 speed:60 serving:5"
fi
ORDER="install"
for item in $STEPS; do ORDER="$ORDER ${item%%:*}"; done

if [ "$MODE" = cpu ]; then
  # the dry run: one process for all steps (a process start costs ~15 s on a busy CPU), each step time-boxed
  # inside it; one thread per process, as the CPU is shared
  export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
  left=$((BUDGET - ($(date +%s) - STARTED) - 10))
  say "-- $STEPS (one process, time box ${left}s)"
  timeout -k 10 "$left" "$PY" "$ROOT/gpu/check.py" run-all $STEPS >>"$LOG" 2>&1
  rc=$?
  for name in ${ORDER#install}; do
    [ "$rc" -ne 0 ] && record "$name" failed "the dry-run process ended with status $rc before this step wrote its result"
    "$PY" "$ROOT/gpu/check.py" show "$name"
  done
else
  for item in $STEPS; do
    name=${item%%:*}
    limit=${item##*:}
    left=$((BUDGET - ($(date +%s) - STARTED) - 10))
    if [ "$left" -lt 10 ]; then
      record "$name" skipped "out of the script's ${BUDGET}s budget"
      continue
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    say "-- $name (time box ${limit}s)"
    timeout -k 10 "$limit" "$PY" "$ROOT/gpu/check.py" "$name" >>"$LOG" 2>&1
    rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
      record "$name" failed "timed out after ${limit}s"
    elif [ "$rc" -ne 0 ]; then
      record "$name" failed "exited with status $rc (see check.log)"
    else
      "$PY" "$ROOT/gpu/check.py" show "$name"
    fi
  done
fi

"$PY" "$ROOT/gpu/check.py" summary $ORDER --started "$STARTED" 2>&1 | tee -a "$LOG"
