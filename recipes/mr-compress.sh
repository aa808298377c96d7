#!/usr/bin/env bash
# The compression proof on mr: a 1-epoch full fine-tune of MiniLM-L6 (the teacher / original), then every
# variant, measured in one run. Numbers in docs/compression.md.
set -euo pipefail
tunecraft train recipes/mr-full.yaml name=mr-full-1ep train.epochs=1 train.num_threads=2 --overwrite --no-progress
tunecraft compress runs/mr-full-1ep all --distill-epochs 1 --threads 2 --latency-samples 100 --rounds 3 \
  --overwrite --no-progress
