"""Tasks, one module each with the same shape: build the model + head, loss, decode, metrics."""

from . import classification

TASKS = {"classification": classification}


def get_task(name: str):
    return TASKS[name]
