"""How each task's results are shown (terminal lines, report sections), registered by task name: the CLI, the
run report, `tunecraft report`/compare, the studio and experiments ask `view_of(task name)`."""

from __future__ import annotations

from .base import View
from .causal_lm import VIEW as CAUSAL_LM
from .classification import VIEW as CLASSIFICATION
from .preference import VIEW as PREFERENCE
from .reward_model import VIEW as REWARD_MODEL
from .rl import VIEW as RL
from .token_classification import VIEW as TOKEN_CLASSIFICATION

VIEWS: dict[str, View] = {"classification": CLASSIFICATION, "token_classification": TOKEN_CLASSIFICATION,
                          "causal_lm": CAUSAL_LM, "reward_model": REWARD_MODEL, "preference": PREFERENCE, "rl": RL}

DEFAULT = View()

__all__ = ["VIEWS", "View", "view_of"]


def view_of(task: str) -> View:
    """The view of the task named `task` (a run's meta "task"); a task without a view of its own (a plug-in
    task) gets the base view: its scalar metrics as they are."""
    return VIEWS.get(task, DEFAULT)
