"""Tasks, one module each with the same shape: data, model + head, loss, metrics, predictions, report."""

from . import causal_lm, classification, token_classification

TASKS = {"classification": classification, "token_classification": token_classification,
         "causal_lm": causal_lm}


def get_task(name: str):
    return TASKS[name]
