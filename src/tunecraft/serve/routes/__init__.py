"""The HTTP routes each task brings, registered by task name. A route module is an APIRouter over the typed
server dependency (serve/core.py `ServerDep`) and a `setup(server)` that registers its batch function and what it
keeps across requests. Every task, a task registered at run time included, is served with PREDICT (POST
/v1/predict, its own `predict`) beside the routes named here."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from fastapi import APIRouter

from . import classify, embeddings, entities, openai, predict, reward


class Routes(NamedTuple):
    router: APIRouter
    setup: Callable
    """(server) -> None, called once per app before the model loads."""


CLASSIFY = Routes(classify.router, classify.setup)
EMBEDDINGS = Routes(embeddings.router, embeddings.setup)
ENTITIES = Routes(entities.router, entities.setup)
REWARD = Routes(reward.router, reward.setup)
OPENAI = Routes(openai.router, openai.setup)
PREDICT = Routes(predict.router, predict.setup)

ROUTES: dict[str, tuple[Routes, ...]] = {
    "classification": (CLASSIFY, EMBEDDINGS),
    "token_classification": (ENTITIES,),
    "reward_model": (REWARD,),
    "causal_lm": (OPENAI,),
    "preference": (OPENAI,),
    "rl": (OPENAI,),
}


def routes_of(task: str) -> tuple[Routes, ...]:
    """The route modules a run of the task named `task` is served with: its own, then PREDICT (set up last: it
    batches its requests beside the items of the task's own routes)."""
    return (*ROUTES.get(task, ()), PREDICT)
