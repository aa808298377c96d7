#!/usr/bin/env bash
# SPIN pairs from chitchat-en (SmolLM2's greedy answers rejected), then DPO on them (recipes/chitchat-dpo.yaml).
set -euo pipefail
python -m tunecraft.align.spin --base smollm2-135m --out runs/chitchat-spin --max-new-tokens 24 --max-prompts 192 32 48 --batch-size 32
tunecraft train recipes/chitchat-dpo.yaml "$@"
