"""The settings of `tunecraft export` (kept apart from the writers, which import torch, so the command line reads
them cheaply)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..settings import Strict

TARGETS = ("hf", "vllm", "ollama", "gguf")


class ExportSettings(Strict):
    """How a generative run is handed to a serving engine. `tunecraft export`'s options come from these fields."""

    gguf_type: Literal["f32", "f16", "bf16", "q8_0", "q4_0"] = "q8_0"
    """ollama, gguf: the tensor type of the 2-D weights (norms stay f32; q4_0 keeps the embedding q8_0)."""
    vllm_layout: Literal["adapter", "merged"] = "adapter"
    """vllm: the base model and the LoRA adapter (served with --enable-lora), or the merged model."""
    check: bool = True
    """Load the written folder back (transformers/peft; GGUF through transformers' GGUF loader) and compare its
    greedy answers with the run's."""
    check_prompts: int = Field(8, ge=1, le=32)
    """Prompts of the check (a fixed set)."""
    name: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    """The model name in the printed serving command (default: the run folder's name, lower-cased)."""
