"""Tasks, one module each with the same shape: data, model + head, loss, metrics, predictions, report."""

from . import classification, token_classification

TASKS = {"classification": classification, "token_classification": token_classification}


def get_task(name: str):
    return TASKS[name]
