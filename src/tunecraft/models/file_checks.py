"""Broken or tampered run files (truncated weights, edited JSON, a half-copied checkpoint) end in an error that
names the file and what is wrong, never a library's traceback."""

from __future__ import annotations

import json
import pickle  # only for torch.load(weights_only=True)'s error class: nothing is unpickled
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError, safe_open

from ..errors import TunecraftError

READ_ERRORS = (OSError, ValueError, RuntimeError, KeyError, TypeError, EOFError, SafetensorError,
               pickle.UnpicklingError)
"""What the readers raise on a file that is missing, truncated or not what it says (JSONDecodeError and
UnicodeDecodeError are ValueErrors)."""


@contextmanager
def reading(path: str | Path, what: str):
    """Any read error inside the block becomes a TunecraftError naming `path` and `what` it is."""
    try:
        yield
    except TunecraftError:
        raise
    except FileNotFoundError:
        raise TunecraftError(f"{path}: the {what} is missing") from None
    except READ_ERRORS as err:
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise TunecraftError(f"{path}: cannot read the {what} ({type(err).__name__}: {detail}); the file is "
                             "truncated or was changed: restore it, or re-export or retrain the run") from None


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
