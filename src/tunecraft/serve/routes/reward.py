"""The reward model's HTTP route: POST /v1/reward (a reward per text, or per answer to a prompt)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from ...settings import Strict
from ..core import Server, ServerDep, require_key


class RewardRequest(Strict):
    model_config = ConfigDict(json_schema_extra={"example": {
        "texts": ["a gorgeous, witty film", "a dull, lifeless film"]}})
    texts: list[str] = Field(min_length=1)
    """The texts to score; with `prompts`, the answers."""
    prompts: list[str] | None = None
    """One prompt per text: each text is scored as the answer to its prompt. Without it each text is scored alone."""


class Reward(BaseModel):
    reward: float
    truncated: bool = False
    """The text (with its prompt) was longer than the model's max_length tokens and was cut."""


class RewardResponse(BaseModel):
    model: str
    rewards: list[Reward]


def setup(server: Server) -> None:
    server.serve_predict(lambda: {"prompt": "", "text": "warm-up"})


router = APIRouter(dependencies=[Depends(require_key)])


@router.post("/v1/reward", response_model=RewardResponse, responses={401: {}, 413: {}, 422: {}})
async def reward(req: RewardRequest, server: ServerDep):
    server.check_texts(req.texts)
    if req.prompts is not None and len(req.prompts) != len(req.texts):
        raise HTTPException(422, f"{len(req.prompts)} prompts for {len(req.texts)} texts")
    items = [{"prompt": req.prompts[i] if req.prompts else "", "text": text} for i, text in enumerate(req.texts)]
    results = await server.submit(items)
    return RewardResponse(model=server.name, rewards=[Reward(reward=r["reward"], truncated=r["truncated"])
                                                      for r in results])
