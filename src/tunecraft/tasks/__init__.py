"""Tasks: one module each, every one implementing the contract in `base.py`; this registry is the only place
that names them. It maps a task's name to its class (whose `Settings` is the recipe's `task:` section); a run gets
its own instance from `build_task`."""

from __future__ import annotations

from collections.abc import Mapping

from .base import Objective, Task, TaskSettings
from .causal_lm import CausalLM
from .classification import Classification
from .preference import Preference
from .reward_model import RewardModel
from .rl import ReinforcementLearning
from .token_classification import TokenClassification

TASKS: dict[str, type[Task]] = {t.NAME: t for t in (Classification, TokenClassification, CausalLM, RewardModel,
                                                        Preference, ReinforcementLearning)}

__all__ = ["TASKS", "Objective", "Task", "TaskSettings", "build_task", "register_task", "task_class"]


def register_task(cls: type[Task]) -> type[Task]:
    """Add a task class (a plug-in's, a test's) to the registry: recipes may then name it in `task:`."""
    if cls.Settings.model_fields["name"].default != cls.NAME:
        raise TypeError(f"{cls.__name__}.Settings must declare name: Literal['{cls.NAME}'] = '{cls.NAME}'")
    TASKS[cls.NAME] = cls
    return cls


def task_class(name: str) -> type[Task]:
    """The registered class of task `name`, or an error naming the registered ones."""
    if name not in TASKS:
        from ..errors import TunecraftError

        raise TunecraftError(f"unknown task '{name}'; tasks: {', '.join(TASKS)}")
    return TASKS[name]


def build_task(spec: TaskSettings | Mapping | str) -> Task:
    """The one way to get a task: a new instance holding its settings, built from a recipe's validated `task:`
    section (`config.task`), from a run's meta or summary (a mapping with "task": tunecraft.json, summary.json:
    the settings it stored, or the old option keys of a run written before), or from a bare name (defaults)."""
    if isinstance(spec, TaskSettings):
        return task_class(spec.name)(spec)
    if isinstance(spec, Mapping):
        cls = task_class(spec["task"])
        return cls(cls.settings_from_meta(spec))
    return task_class(spec)()
