"""The model-format registry: meta["format"] of a run's model folder -> the module whose `load(folder, meta)`
builds its model. A leaf, so that loading a run (trained.py) does not import the packages that write the
formats (compress/): they are named here by module path and imported only when a folder of theirs is loaded."""

from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import TunecraftError
from .folder import META

TRANSFORMERS = "transformers"  # a plain model/ folder, loaded by the task's MODEL_CLASS
FORMATS: dict[str, str] = {
    "torch-int8": "tunecraft.compress.quantize",
    "pruned-heads": "tunecraft.compress.prune",
    "onnx": "tunecraft.compress.onnx_export",
    "torchao": "tunecraft.compress.llm_variant",
    "gguf": "tunecraft.compress.llm_variant",
}


def register_format(name: str, module: str) -> None:
    """A plug-in's own variant format: `module` (a dotted path) has `load(folder, meta)`."""
    FORMATS[name] = module


def load_model(folder: Path, meta: dict):
    """The model of a variant folder (any format but plain transformers); an unknown format names the file."""
    fmt = meta.get("format", TRANSFORMERS)
    if fmt not in FORMATS:
        known = ", ".join([TRANSFORMERS, *FORMATS])
        raise TunecraftError(f"{folder / META}: unknown model format '{fmt}'; known: {known}")
    return importlib.import_module(FORMATS[fmt]).load(folder, meta)
