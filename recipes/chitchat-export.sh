#!/usr/bin/env bash
# The hand-off proof for a chat model, as run for docs/compression.md and docs/deploy.md: the SmolLM2 chitchat
# LoRA (recipes/chitchat-lora.yaml, shortened to 12 steps of 8 and 40 held-out conversations so that it fits a
# shared 2-core machine), its causal-LM variants (torchao int8/int4, GGUF f16/q8_0/q4_0) measured in one run, then
# the folders vLLM, Ollama, llama.cpp and plain transformers take, each loaded back and checked against the run.
set -euo pipefail
tunecraft train recipes/chitchat-lora.yaml train.max_steps=12 train.batch_size=8 task.generation.eval_samples=0 \
  task.generation.report_samples=0 data.max_eval_samples=40 --overwrite --no-progress
tunecraft compress runs/chitchat-lora all --threads 2 --rounds 2 --llm-prompts 24 --overwrite --no-progress
tunecraft export runs/chitchat-lora --for hf --overwrite
tunecraft export runs/chitchat-lora --for vllm --overwrite
tunecraft export runs/chitchat-lora --for ollama --gguf-type q8_0 --overwrite
tunecraft export runs/chitchat-lora --for gguf --gguf-type f16 --out runs/chitchat-lora/export/gguf-f16 --overwrite
