#!/usr/bin/env bash
# The compression proof on mr, as run for docs/compression.md: a full fine-tune of MiniLM-L6 (the teacher,
# "original"; 60 steps of 32, a quarter epoch, to fit a shared 2-core machine), then every variant, measured
# in one run. More steps (recipes/mr-full.yaml as is) give a stronger teacher; the commands stay the same.
set -euo pipefail
tunecraft train recipes/mr-full.yaml name=mr-teacher train.max_steps=60 train.num_threads=1 --overwrite --no-progress
tunecraft compress runs/mr-teacher all --distill-max-steps 60 --threads 1 --latency-samples 30 --rounds 2 \
  --overwrite --no-progress
