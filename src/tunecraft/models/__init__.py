"""Load a base model's folder and tokenizer (bundled asset or local HF folder), or a trained run's model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from ..assets import model_path
from ..errors import TunecraftError

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
META = "tunecraft.json"


def resolve_base(name: str) -> Path:
    return model_path(name)


def load_tokenizer(path: Path):
    return AutoTokenizer.from_pretrained(str(path))


@dataclass
class TrainedModel:
    model: object
    tokenizer: object
    meta: dict
    path: Path


def run_model_dir(run: str | Path) -> Path:
    """A run folder's model/ (or a model folder itself)."""
    run = Path(run)
    for candidate in (run / "model", run):
        if (candidate / META).is_file():
            return candidate
    raise TunecraftError(f"{run} is not a tunecraft run folder or model folder (no model/{META} found)")


def load_trained(run: str | Path) -> TrainedModel:
    folder = run_model_dir(run)
    meta = json.loads((folder / META).read_text(encoding="utf-8"))
    if meta["task"] != "classification":
        raise TunecraftError(f"{folder}: task '{meta['task']}' is not supported by this command yet")
    if meta.get("format", "transformers") == "transformers":
        model = AutoModelForSequenceClassification.from_pretrained(str(folder))
    else:  # a compressed variant: int8, head-pruned or ONNX (see tunecraft.compress)
        from ..compress.variant import load_model

        model = load_model(folder, meta)
    model.eval()
    return TrainedModel(model, AutoTokenizer.from_pretrained(str(folder)), meta, folder)
