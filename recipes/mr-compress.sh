#!/usr/bin/env bash
# The compression proof on mr, as run for docs/compression.md: a full fine-tune of MiniLM-L6 (the teacher,
# "original": recipes/mr-full.yaml as is, 3 epochs with early stopping), then every variant, measured in one run.
set -euo pipefail
tunecraft train recipes/mr-full.yaml name=mr-teacher train.num_threads=1 --overwrite --no-progress
tunecraft compress runs/mr-teacher all --distill-max-steps 60 --threads 1 --latency-samples 30 --rounds 2 \
  --overwrite --no-progress
