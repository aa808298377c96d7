"""Tasks: one module each, every one implementing the contract in `base.py`; this registry is the only place
that names them."""

from .base import Objective, Task
from .causal_lm import TASK as CAUSAL_LM
from .classification import TASK as CLASSIFICATION
from .preference import TASK as PREFERENCE
from .reward_model import TASK as REWARD_MODEL
from .rl import TASK as RL
from .token_classification import TASK as TOKEN_CLASSIFICATION

TASKS: dict[str, Task] = {t.NAME: t for t in (CLASSIFICATION, TOKEN_CLASSIFICATION, CAUSAL_LM, REWARD_MODEL,
                                                  PREFERENCE, RL)}

__all__ = ["TASKS", "Objective", "Task", "get_task"]


def get_task(name: str) -> Task:
    if name not in TASKS:
        from ..errors import TunecraftError

        raise TunecraftError(f"unknown task '{name}'; tasks: {', '.join(TASKS)}")
    return TASKS[name]
