"""Broken or tampered run files (truncated weights, edited JSON, a half-copied checkpoint) end in an error that
names the file and what is wrong, never a library's traceback."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from ..runs import reading


def check_model_folder(folder: Path) -> None:
    """config.json parses and each safetensors file's header is whole (metadata only: fast), before transformers
    loads the folder."""
    config = folder / "config.json"
    if config.exists():
        with reading(config, "model configuration"):
            if not isinstance(json.loads(config.read_text(encoding="utf-8")), dict):
                raise ValueError("not a JSON object")
    for weights in sorted(folder.glob("*.safetensors")):
        with reading(weights, "model weights"), safe_open(str(weights), "pt") as handle:
            handle.keys()
