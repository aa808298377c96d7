"""The token-classification (NER) task's HTTP route: POST /v1/entities (entities with types, character
offsets and scores, as `tunecraft predict` gives them)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from ..data.ner import Sentence, split_words
from ..settings import Strict


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


def entity_routes(server, predict_sentences) -> APIRouter:
    """`server`: the server core (serve/app.py `Server`); `predict_sentences(trained, sentences, batch_size,
    dtype)`: the task's own."""
    router = APIRouter()

    def prepare(texts: list[str]) -> list[Sentence]:
        """Sentences of words, tagged whole: a sentence longer than max_length goes through overlapping windows,
        as in training and `tunecraft predict`."""
        sentences = []
        for i, text in enumerate(texts):
            words, offsets = split_words(text)
            if not words:
                raise HTTPException(422, f"texts[{i}] has no words")
            sentences.append(Sentence(words, None, given_text=text, given_offsets=offsets))
        return sentences

    def infer(items: list[Sentence]) -> list[dict]:
        return predict_sentences(server.trained, items, len(items), server.dtype)

    def warm_up() -> None:
        for size in (1, 8):
            infer(prepare(["warm-up"] * size))

    server.serve_batches(infer, warm_up)

    @router.post("/v1/entities", response_model=EntitiesResponse, dependencies=[Depends(server.require_key)],
                 responses={401: {}, 413: {}, 422: {}})
    async def entities(req: EntitiesRequest):
        server.check_count(req.texts)
        results = await server.submit(prepare(req.texts))
        return EntitiesResponse(model=server.name, results=[TaggedText(**r) for r in results])

    return router
