"""The route every task is served with: POST /v1/predict, the task's own `predict` over raw texts or records (a
task of another modality included), answered with exactly what `predict` returns for them.

A request is one item of the micro-batcher: a batch of requests is predicted at once; when that raises a user
error (bad inputs), each request is predicted alone, so one bad request is a 422 and never fails the others."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ConfigDict, Field

from ...errors import TunecraftError
from ...settings import Strict
from ..core import Server, ServerDep, require_key

BAD_INPUT = (TunecraftError, ValueError)
"""What a task's `predict` raises for inputs it cannot read: a 422 with its message."""


class PredictRequest(Strict):
    model_config = ConfigDict(json_schema_extra={"example": {"inputs": ["a gorgeous, witty film"]}})
    inputs: list[str | dict[str, Any]] = Field(min_length=1)


class PredictResponse(BaseModel):
    model: str
    predictions: list[Any]


class Job(list):
    """One request's inputs, as one micro-batcher item (told apart from the items of the task's own routes)."""


def _predict(server: Server, inputs: list) -> list:
    return server.task.predict(server.trained, inputs, len(inputs), server.dtype, warn=False)


def _alone(server: Server, job: Job) -> list | Exception:
    try:
        return _predict(server, job)
    except BAD_INPUT as err:
        return err


def predict_jobs(server: Server, jobs: list[Job]) -> list[list | Exception]:
    """Each job's predictions (or the user error its inputs raised): all jobs at once, else one by one."""
    try:
        flat = _predict(server, [item for job in jobs for item in job])
    except BAD_INPUT:
        return [_alone(server, job) for job in jobs]
    out, start = [], 0
    for job in jobs:
        out.append(flat[start:start + len(job)])
        start += len(job)
    return out


def _beside(server: Server, own):
    """The batch function: this route's jobs through `predict_jobs`, the task's routes' items through `own`."""

    def infer(items: list) -> list:
        jobs = [i for i, item in enumerate(items) if isinstance(item, Job)]
        others = [i for i, item in enumerate(items) if not isinstance(item, Job)]
        results: list = [None] * len(items)
        for i, result in zip(jobs, predict_jobs(server, [items[i] for i in jobs]) if jobs else []):
            results[i] = result
        for i, result in zip(others, own([items[i] for i in others]) if others else []):
            results[i] = result
        return results

    return infer


def setup(server: Server) -> None:
    server.wrap_batches(lambda own: _beside(server, own))


router = APIRouter(dependencies=[Depends(require_key)])


@router.post("/v1/predict", response_model=PredictResponse, responses={401: {}, 413: {}, 422: {}})
async def predict(req: PredictRequest, server: ServerDep):
    server.check_count(req.inputs)
    [result] = await server.submit([Job(req.inputs)])
    if isinstance(result, Exception):
        raise HTTPException(422, str(result))
    return PredictResponse(model=server.name, predictions=jsonable_encoder(result))
