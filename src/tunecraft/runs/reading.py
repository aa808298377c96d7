"""Reading a run's files: a read error becomes one line naming the file and what it is, never a library's
traceback (truncated weights, edited JSON, a half-copied checkpoint)."""

from __future__ import annotations

import pickle  # only for torch.load(weights_only=True)'s error class: nothing is unpickled
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

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
