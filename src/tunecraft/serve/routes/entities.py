"""The token-classification (NER) task's HTTP route: POST /v1/entities (entities with types, character
offsets and scores, as `tunecraft predict` gives them)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from ...data.ner import split_words
from ...settings import Strict
from ..core import Server, ServerDep, require_key


class EntitiesRequest(Strict):
    model_config = ConfigDict(json_schema_extra={"example": {"texts": ["Ana Lima flew to New York."]}})
    texts: list[str] = Field(min_length=1)


class Entity(BaseModel):
    type: str
    start: int
    """Character offset of the first character in the text."""
    end: int
    """One past the last character."""
    text: str
    score: float


class TaggedText(BaseModel):
    entities: list[Entity]
    tokens: list[str]
    tags: list[str]


class EntitiesResponse(BaseModel):
    model: str
    results: list[TaggedText]


def check_words(texts: list[str]) -> None:
    """422 for a text with no words (the task splits the others into words, each CJK character one word, and tags
    a sentence longer than max_length through overlapping windows, as in training and `tunecraft predict`)."""
    for i, text in enumerate(texts):
        if not split_words(text)[0]:
            raise HTTPException(422, f"texts[{i}] has no words")


def setup(server: Server) -> None:
    server.serve_predict(lambda: "warm-up")


router = APIRouter(dependencies=[Depends(require_key)])


@router.post("/v1/entities", response_model=EntitiesResponse, responses={401: {}, 413: {}, 422: {}})
async def entities(req: EntitiesRequest, server: ServerDep):
    server.check_count(req.texts)
    check_words(req.texts)
    results = await server.submit(req.texts)
    return EntitiesResponse(model=server.name, results=[TaggedText(**r) for r in results])
